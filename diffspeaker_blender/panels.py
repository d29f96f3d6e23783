"""The sidebar panels in the 3D Viewport (N panel, 'DiffSpeaker' tab)."""
from __future__ import annotations

import bpy

from .cleanup import label, status
from .operators import disabled_reason


class DIFFSPEAKER_PT_main(bpy.types.Panel):
    bl_idname = "DIFFSPEAKER_PT_main"
    bl_label = "DiffSpeaker Lip Sync"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DiffSpeaker"

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
        col.prop(settings, "guidance", slider=True)
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


class DIFFSPEAKER_PT_cleanup(bpy.types.Panel):
    """Cleanup of the generated motion and the take switcher, for the active mesh."""

    bl_idname = "DIFFSPEAKER_PT_cleanup"
    bl_label = "Cleanup and Takes"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DiffSpeaker"
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


classes = (DIFFSPEAKER_PT_main, DIFFSPEAKER_PT_cleanup)

register, unregister = bpy.utils.register_classes_factory(classes)
