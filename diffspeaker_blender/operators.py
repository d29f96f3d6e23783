"""Operators: generate (modal with a worker in the UI, synchronous in background
mode), cancel, remove the tool's animation, export FBX."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import StringProperty
from bpy_extras.io_utils import ExportHelper

from . import arkit_bake, bake, compat, retarget
from .export import export_fbx
from .head_mesh import add_head
from .core.job import AudioSource, Failed, Finished, GenerationJob, Progress, Request, describe_error, mesh_mismatch_message, run_generation
from .core.model_source import SESSION_CACHE, ModelUnavailable
from .polls import poll_reason
from .preferences import preferences


@dataclass(frozen=True)
class Target:
    """What a finished job is baked onto, captured when the job starts."""

    object_name: str
    scene_name: str
    start_frame: float


def disabled_reason(context) -> str:
    """Why Generate cannot run right now ('' when it can); shown on the greyed-out button."""
    obj = context.active_object
    if obj is None or obj.type != "MESH":
        return "Select the mesh to animate (make it the active object)"
    character = retarget.character_of(obj)
    if character is not obj:
        return f"'{obj.name}' is a guide: select the character '{character.name}' to animate it"
    if context.scene.diffspeaker.job.running:
        return "A generation is already running"
    return ""


def _audio_and_start(context) -> tuple[AudioSource, float]:
    scene, settings = context.scene, context.scene.diffspeaker
    if settings.audio_source == "FILE":
        if not settings.audio_file:
            raise ValueError("Choose an audio file in the DiffSpeaker panel.")
        path = Path(bpy.path.abspath(settings.audio_file))
        if not path.is_file():
            raise ValueError(f"The audio file '{path}' does not exist.")
        return AudioSource(path=str(path), label=path.name), float(settings.start_frame)
    strips = compat.sound_strips(scene)
    if not strips:
        raise ValueError("The scene has no sound strips. Add the dialogue in the Video Sequencer, or choose an audio file.")
    strip = next((s for s in strips if s.name == settings.sound_strip), None)
    if strip is None:
        raise ValueError("Pick the sound strip to lip-sync in the DiffSpeaker panel." if not settings.sound_strip
                         else f"There is no sound strip named '{settings.sound_strip}'.")
    if strip.sound is None:
        raise ValueError(f"The sound strip '{strip.name}' has no sound data.")
    # Audio time 0 plays at the strip's frame_start, whether or not its start is trimmed.
    start = strip.frame_start if settings.use_strip_start else float(settings.start_frame)
    if strip.sound.packed_file is not None:
        return AudioSource(packed=bytes(strip.sound.packed_file.data), label=strip.name), start
    path = Path(bpy.path.abspath(strip.sound.filepath, library=strip.sound.library))
    if not path.is_file():
        raise ValueError(f"The sound file of strip '{strip.name}' is missing: {path}")
    return AudioSource(path=str(path), label=strip.name), start


def prepare(context) -> tuple[Request, Target]:
    """Check everything that can be checked instantly; ValueError says what to fix."""
    reason = disabled_reason(context)
    if reason:
        raise ValueError(reason + ".")
    obj, settings = context.active_object, context.scene.diffspeaker
    audio, start = _audio_and_start(context)
    spec = preferences(context).model_spec()
    model_vertices = spec.vertex_count()  # raises ModelUnavailable with advice
    mesh_vertices = len(obj.data.vertices)
    # A character bound to a guide: the model animates the guide, bake_result moves the motion across.
    guide_vertices = retarget.bound_guide_vertices(obj)
    if guide_vertices is not None and model_vertices in (None, guide_vertices):
        mesh_vertices = guide_vertices
    elif model_vertices is not None and model_vertices != mesh_vertices:
        raise ValueError(mesh_mismatch_message(mesh_vertices, model_vertices) + retarget.mismatch_hint(obj, model_vertices))
    request = Request(
        load_model=lambda: SESSION_CACHE.get(spec), audio=audio, style=settings.style, steps=settings.steps,
        guidance=None if settings.use_model_guidance else settings.guidance, seed=settings.seed, takes=settings.takes, n_vertices=mesh_vertices,
        close_lips=settings.close_lips,
    )
    return request, Target(obj.name, context.scene.name, start)


def bake_result(context, target: Target, finished: Finished) -> str:
    """Write the generated motion onto the target; returns the summary line."""
    scene = bpy.data.scenes.get(target.scene_name)
    obj = scene.objects.get(target.object_name) if scene else None
    if obj is None:
        raise ValueError(f"The object '{target.object_name}' was removed while generating; nothing was baked.")
    if obj.mode != "OBJECT":
        raise ValueError("Switch the mesh to Object Mode to bake; nothing was changed.")
    settings = scene.diffspeaker
    generation = finished.generation
    offsets, regions = retarget.motion_on(obj, generation.offsets)  # a bound character's, from its guide's
    if retarget.use_arkit(scene, obj):
        result = arkit_bake.bake_arkit(obj, offsets, model_fps=generation.fps, scene=scene,
                                       start_frame=target.start_frame)
    else:
        result = bake.bake_offsets(
            obj, offsets, model_fps=generation.fps, scene=scene, start_frame=target.start_frame,
            mode=settings.bake_mode, max_error_m=settings.max_error_mm / 1000.0, regions=regions,
        )
    return (
        f"{generation.offsets.shape[0]} take(s), {generation.duration_s:.1f} s of speech, style {finished.style_name}, "
        f"{result.summary()}, generated in {finished.seconds:.1f} s" + "".join(f", {note}" for note in finished.notes)
    )


class DIFFSPEAKER_OT_generate_animation(bpy.types.Operator):
    """Generate facial animation from the chosen speech and bake it as shape keys"""

    bl_idname = "diffspeaker.generate_animation"
    bl_label = "Generate"
    bl_options = {"REGISTER", "UNDO"}

    _job: GenerationJob | None = None
    _target: Target | None = None
    _timer = None

    @classmethod
    def poll(cls, context):
        return poll_reason(cls, disabled_reason(context))

    def execute(self, context):
        """Synchronous path: background mode, scripts and tests."""
        job = context.scene.diffspeaker.job
        try:
            request, target = prepare(context)
            job.status = "Generating..."
            finished = run_generation(request)
            job.last_result = bake_result(context, target, finished)
        except (ValueError, FileNotFoundError, ModelUnavailable) as exc:
            return self._fail(context, Failed(str(exc)))
        except Exception as exc:  # noqa: BLE001 - report, never crash Blender
            return self._fail(context, describe_error(exc))
        job.status = "Done: " + job.last_result
        job.progress = 1.0
        self.report({"INFO"}, job.status)
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        try:
            request, self._target = prepare(context)
        except (ValueError, ModelUnavailable) as exc:
            return self._fail(context, Failed(str(exc)))
        job = context.scene.diffspeaker.job
        job.running, job.cancel_requested, job.progress, job.status = True, False, 0.0, "Loading the model..."
        self._job = GenerationJob(request).start()
        self._timer = context.window_manager.event_timer_add(0.15, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = context.scene.diffspeaker.job
        if event.type == "ESC" or job.cancel_requested:
            if not self._job.cancel_requested:
                self._job.cancel()
                job.status = "Cancelling..."
        if event.type != "TIMER":
            return {"PASS_THROUGH"}  # Blender stays fully usable while the model runs
        for message in self._job.messages():
            if isinstance(message, Progress):
                job.progress = message.done / message.total
                job.status = f"Sampling step {message.done} of {message.total}"
            elif isinstance(message, Failed):
                return self._finish(context, self._fail(context, message))
            elif isinstance(message, Finished):
                try:
                    job.last_result = bake_result(context, self._target, message)
                except Exception as exc:  # noqa: BLE001
                    return self._finish(context, self._fail(context, describe_error(exc)))
                job.status, job.progress = "Done: " + job.last_result, 1.0
                self.report({"INFO"}, job.status)
                return self._finish(context, {"FINISHED"})
        _redraw(context)
        return {"PASS_THROUGH"}

    def _finish(self, context, result: set) -> set:
        context.window_manager.event_timer_remove(self._timer)
        context.scene.diffspeaker.job.running = False
        context.scene.diffspeaker.job.cancel_requested = False
        _redraw(context)
        return result

    def _fail(self, context, failure: Failed) -> set:
        job = context.scene.diffspeaker.job
        job.status = failure.message
        job.running = False
        if failure.details:
            print(failure.details)
        self.report({"WARNING"} if failure.message == "Cancelled." else {"ERROR"}, failure.message)
        return {"CANCELLED"}


class DIFFSPEAKER_OT_cancel_job(bpy.types.Operator):
    """Stop the running generation"""

    bl_idname = "diffspeaker.cancel_job"
    bl_label = "Cancel"
    bl_options = {"INTERNAL"}

    def execute(self, context):
        context.scene.diffspeaker.job.cancel_requested = True
        return {"FINISHED"}


class DIFFSPEAKER_OT_remove_animation(bpy.types.Operator):
    """Remove the shape keys and keyframes that DiffSpeaker made, its keyframes on ARKit keys too (yours are kept)"""

    bl_idname = "diffspeaker.remove_animation"
    bl_label = "Remove Generated Animation"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return context.active_object is not None and context.active_object.type == "MESH"

    def execute(self, context):
        obj = context.active_object
        try:
            keys = bake.remove_baked(obj)  # checks the mesh can be changed before anything is
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        curves = arkit_bake.remove_arkit_curves(obj)
        self.report({"INFO"}, removed_message(keys, curves))
        return {"FINISHED"}


def removed_message(keys: int, arkit_curves: int) -> str:
    """What Remove Generated Animation did, in words."""
    parts = [f"{keys} generated shape key{'' if keys == 1 else 's'}"] if keys else []
    if arkit_curves:
        parts.append(f"the keyframes of {arkit_curves} ARKit key{'' if arkit_curves == 1 else 's'}")
    return "Removed " + " and ".join(parts) if parts else "Nothing generated to remove"


class DIFFSPEAKER_OT_export_fbx(bpy.types.Operator, ExportHelper):
    """Export the selected meshes as FBX with shape keys and their animation"""

    bl_idname = "diffspeaker.export_fbx"
    bl_label = "Export FBX (Shape Keys)"
    filename_ext = ".fbx"
    filter_glob: StringProperty(default="*.fbx", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return context.active_object is not None and context.active_object.type == "MESH"

    def execute(self, context):
        return export_fbx(self.filepath)


class DIFFSPEAKER_OT_add_head(bpy.types.Operator):
    """Add the head that the built-in model animates"""

    bl_idname = "diffspeaker.add_head"
    bl_label = "Add DiffSpeaker Head"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        if context.mode != "OBJECT":
            self.report({"ERROR"}, "Switch to Object Mode to add the head.")
            return {"CANCELLED"}
        obj = add_head(context)
        self.report({"INFO"}, f"Added {obj.name} ({len(obj.data.vertices)} vertices)")
        return {"FINISHED"}


def _redraw(context):
    for area in context.screen.areas if context.screen else ():
        if area.type == "VIEW_3D":
            area.tag_redraw()


classes = (
    DIFFSPEAKER_OT_generate_animation,
    DIFFSPEAKER_OT_cancel_job,
    DIFFSPEAKER_OT_remove_animation,
    DIFFSPEAKER_OT_export_fbx,
    DIFFSPEAKER_OT_add_head,
)

register, unregister = bpy.utils.register_classes_factory(classes)
