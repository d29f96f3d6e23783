"""Per-scene settings the panel edits, and the state of the running job."""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty


class DIFFSPEAKER_PG_job(bpy.types.PropertyGroup):
    """Transient job state, drawn by the panel; reset when a file loads."""

    running: BoolProperty(default=False)
    cancel_requested: BoolProperty(default=False)
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    status: StringProperty(default="")
    last_result: StringProperty(default="", description="Summary of the last generation")


class DIFFSPEAKER_PG_settings(bpy.types.PropertyGroup):
    audio_source: EnumProperty(
        name="Audio",
        items=[("STRIP", "Sound Strip", "A sound strip in the Video Sequencer"), ("FILE", "File", "An audio file on disk")],
        default="STRIP",
    )
    sound_strip: StringProperty(name="Strip", description="Sound strip whose audio drives the face")
    audio_file: StringProperty(name="File", subtype="FILE_PATH", description="WAV, FLAC or OGG file")
    style: IntProperty(name="Style", min=0, default=0, description="Speaking style (the model's training speaker)")
    seed: IntProperty(name="Seed", min=0, default=0, description="Same seed, same result; change it for another take")
    takes: IntProperty(name="Takes", min=1, max=8, default=1, description="Generate several takes (seeds) at once")
    steps: IntProperty(name="Quality", min=1, max=200, default=50, description="Sampling steps: fewer is faster, 50 matches the paper")
    use_model_guidance: BoolProperty(
        name="Auto", default=True,
        description="Use the variety the model was tuned for (its own guidance scale); turn off to set your own",
    )
    guidance: FloatProperty(
        name="Variety", min=0.0, max=5.0, default=0.0,
        description="Audio-free guidance: 0 follows the audio most literally, higher exaggerates the articulation "
                    "and varies more between seeds (needs a model trained with the audio dropped)",
    )
    close_lips: BoolProperty(
        name="Close Lips on P, B, M", default=True,
        description="Shut the lips fully where the speech recogniser hears p, b or m; the model alone sometimes "
                    "stops a millimetre short on real voices. Needs a model with the phoneme front-end (the default)",
    )
    bake_mode: EnumProperty(
        name="Bake",
        items=[
            ("COMPACT", "Compact", "A few shape keys plus one curve each: light, editable, exports well"),
            ("EXACT", "Exact", "One shape key per frame: exact, heavy"),
        ],
        default="COMPACT",
    )
    max_error_mm: FloatProperty(name="Max Error (mm)", min=0.001, max=10.0, default=0.1, description="Compact bake: largest vertex error allowed")
    use_strip_start: BoolProperty(name="Start at Strip", default=True, description="Start the animation where the sound strip starts")
    start_frame: IntProperty(name="Start Frame", default=1)
    job: PointerProperty(type=DIFFSPEAKER_PG_job)


classes = (DIFFSPEAKER_PG_job, DIFFSPEAKER_PG_settings)


@bpy.app.handlers.persistent
def _reset_job(_dummy=None):
    """A file saved while a job ran must not reopen looking busy."""
    for scene in bpy.data.scenes:
        job = scene.diffspeaker.job
        job.running = job.cancel_requested = False
        job.progress = 0.0
        job.status = ""


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.diffspeaker = PointerProperty(type=DIFFSPEAKER_PG_settings)
    bpy.app.handlers.load_post.append(_reset_job)


def unregister():
    if _reset_job in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_reset_job)
    del bpy.types.Scene.diffspeaker
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
