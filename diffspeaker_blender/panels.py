"""The sidebar panels in the 3D Viewport (N panel, 'DiffSpeaker' tab)."""
from __future__ import annotations

import bpy

from .cleanup import label, status
from .operators import disabled_reason
from .retarget import arkit_key_names, binding_problem, character_of, guide_moved, guide_of


class _Sidebar:
    """The 'DiffSpeaker' tab of the 3D Viewport's sidebar."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DiffSpeaker"


class DIFFSPEAKER_PT_main(_Sidebar, bpy.types.Panel):
    bl_idname = "DIFFSPEAKER_PT_main"
    bl_label = "DiffSpeaker Lip Sync"

    def draw(self, context):
        layout = self.layout
        scene, settings = context.scene, context.scene.diffspeaker
        job = settings.job
        obj = context.active_object

        box = layout.box()
        row = box.row()
        row.label(text=f"Mesh: {obj.name}" if obj is not None and obj.type == "MESH" else "Mesh: select one", icon="MESH_DATA")
        row.operator("diffspeaker.add_head", text="", icon="ADD")
        box.prop(settings, "audio_source", expand=True)
        if settings.audio_source == "STRIP":
            if scene.sequence_editor is not None:
                strips_owner = scene.sequence_editor
                collection = "strips_all" if hasattr(strips_owner, "strips_all") else "sequences_all"
                box.prop_search(settings, "sound_strip", strips_owner, collection, icon="SOUND")
            else:
                box.label(text="No sound strips: add one in the Video Sequencer", icon="INFO")
            row = box.row()
            row.prop(settings, "use_strip_start")
            sub = row.row()
            sub.enabled = not settings.use_strip_start
            sub.prop(settings, "start_frame")
        else:
            box.prop(settings, "audio_file")
            box.prop(settings, "start_frame")

        col = layout.column(align=True)
        col.prop(settings, "style")
        col.prop(settings, "seed")
        col.prop(settings, "takes")
        col.prop(settings, "steps")
        row = col.row(align=True)
        row.prop(settings, "use_model_guidance", toggle=True)
        sub = row.row(align=True)
        sub.enabled = not settings.use_model_guidance
        sub.prop(settings, "guidance", slider=True)
        col.prop(settings, "close_lips")
        row = layout.row()
        row.prop(settings, "bake_mode", expand=True)
        if settings.bake_mode == "COMPACT":
            layout.prop(settings, "max_error_mm")

        row = layout.row(align=True)
        row.scale_y = 1.4
        if job.running:
            if hasattr(row, "progress"):  # UILayout.progress exists from Blender 4.0
                row.progress(factor=job.progress, type="BAR", text=job.status or "Working...")
            else:
                row.label(text=job.status)
            row.operator("diffspeaker.cancel_job", text="", icon="CANCEL")
        else:
            row.operator("diffspeaker.generate_animation", icon="PLAY_SOUND")
            reason = disabled_reason(context)
            if reason:
                layout.label(text=reason, icon="ERROR")
        if job.status and not job.running:
            layout.label(text=job.status, icon="INFO")
        if job.last_result:
            layout.label(text="Last: " + job.last_result)
        row = layout.row(align=True)
        row.operator("diffspeaker.remove_animation", icon="TRASH")
        row.operator("diffspeaker.export_fbx", icon="EXPORT")


class DIFFSPEAKER_PT_cleanup(_Sidebar, bpy.types.Panel):
    """Cleanup of the generated motion and the take switcher, for the active mesh."""

    bl_idname = "DIFFSPEAKER_PT_cleanup"
    bl_label = "Cleanup and Takes"
    bl_parent_id = "DIFFSPEAKER_PT_main"

    def draw(self, context):
        layout = self.layout
        state = status(context.active_object)
        if state.message:
            layout.label(text=state.message, icon="INFO")
            return
        settings = state.settings

        if state.takes > 1:
            row = layout.row(align=True)
            row.label(text="Take")
            for take in range(state.takes):
                op = row.operator("diffspeaker.use_take", text=str(take), depress=take == state.active_take)
                op.take = take
            layout.operator("diffspeaker.push_takes_to_nla", icon="NLA")

        col = layout.column(align=True)
        for region in state.regions:
            col.label(text=f"{label(region)}: smoothing {settings.sigma(region):g}, "
                           f"intensity {settings.gain(region):g}")
        col.label(text=f"Time offset: {settings.time_offset:+g} frames")
        decimated = settings.decimate_max_error_mm
        col.label(text=f"Keys decimated within {decimated:g} mm" if decimated else "Keys on every frame")

        grid = layout.grid_flow(columns=2, align=True)
        grid.operator("diffspeaker.smooth_motion", icon="SMOOTHCURVE")
        grid.operator("diffspeaker.set_intensity", icon="FULLSCREEN_ENTER")
        grid.operator("diffspeaker.offset_motion", icon="TIME")
        grid.operator("diffspeaker.decimate_keys", icon="IPO_LINEAR")
        layout.operator("diffspeaker.reset_cleanup", icon="LOOP_BACK")


class DIFFSPEAKER_PT_retarget(_Sidebar, bpy.types.Panel):
    """Fitting the model onto your own character (see retarget.py), for the active mesh or its guide."""

    bl_idname = "DIFFSPEAKER_PT_retarget"
    bl_label = "Your Character"
    bl_parent_id = "DIFFSPEAKER_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        character = character_of(context.active_object)
        if character is None or character.type != "MESH":
            layout.label(text="Select your character's mesh", icon="INFO")
            return
        guide = guide_of(character)
        row = layout.row(align=True)
        row.operator("diffspeaker.add_guide", icon="MESH_MONKEY")
        row.operator("diffspeaker.bind_guide", icon="CONSTRAINT")
        props = character.diffspeaker_binding
        layout.label(text=f"Guide: {guide.name}" if guide else "No guide", icon="OBJECT_DATA")
        problem = binding_problem(character)
        if props.bound and not problem:
            layout.label(text=props.summary, icon="CHECKMARK")
            if guide_moved(character):
                layout.label(text="The guide moved since Bind: click Bind to use its new place", icon="ERROR")
        elif props.bound:
            layout.label(text=problem, icon="ERROR")
        settings = context.scene.diffspeaker_retarget
        layout.prop(settings, "use_arkit")
        if settings.use_arkit:
            found = arkit_key_names(character)
            layout.label(text=f"{len(found)} ARKit mouth/jaw keys found" if found else "No ARKit keys on this mesh",
                         icon="SHAPEKEY_DATA")


classes = (DIFFSPEAKER_PT_main, DIFFSPEAKER_PT_cleanup, DIFFSPEAKER_PT_retarget)

register, unregister = bpy.utils.register_classes_factory(classes)
