"""Add-on preferences: where the model comes from and which device runs it."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty

from .core.model_source import ModelSpec, builtin_model_path

ADDON_ID = __package__


class DIFFSPEAKER_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    model_source: EnumProperty(
        name="Model",
        items=[
            ("BUILTIN", "Built-in", "The default model shipped with the add-on"),
            ("CHECKPOINT", "Model file", "A DiffSpeaker .safetensors model (converted or trained)"),
            ("OFFICIAL", "Official checkpoint", "An official DiffSpeaker .ckpt (VOCASET or BIWI) with its speech encoder"),
        ],
        default="BUILTIN",
    )
    model_path: StringProperty(name="Model File", subtype="FILE_PATH", description="A .safetensors model")
    official_path: StringProperty(name="Checkpoint", subtype="FILE_PATH", description="An official DiffSpeaker .ckpt")
    official_preset: EnumProperty(
        name="Dataset",
        items=[("AUTO", "Automatic", "From the vertex count"), ("VOCASET", "VOCASET", "FLAME, 30 fps"), ("BIWI", "BIWI", "25 fps")],
        default="AUTO",
    )
    official_template: StringProperty(name="Template", subtype="FILE_PATH", description="Template mesh: .ply, .obj, .npy or templates.pkl")
    official_subject: StringProperty(name="Subject", description="Subject name inside templates.pkl")
    encoder_config: StringProperty(name="Encoder Config", subtype="FILE_PATH", description="config.json of a non-base speech encoder (optional)")
    device: EnumProperty(
        name="Device",
        items=[("AUTO", "Automatic", "GPU when available, else CPU"), ("CPU", "CPU", ""), ("GPU", "GPU", "CUDA or Apple Metal")],
        default="AUTO",
    )

    def model_spec(self) -> ModelSpec:
        device = {"AUTO": "auto", "CPU": "cpu", "GPU": "auto"}[self.device]
        if self.model_source == "CHECKPOINT":
            return ModelSpec("CHECKPOINT", bpy.path.abspath(self.model_path), device=device)
        if self.model_source == "OFFICIAL":
            return ModelSpec(
                "OFFICIAL", bpy.path.abspath(self.official_path), self.official_preset,
                bpy.path.abspath(self.official_template) if self.official_template else "",
                self.official_subject, bpy.path.abspath(self.encoder_config) if self.encoder_config else "", device,
            )
        return ModelSpec("BUILTIN", device=device)

    def draw(self, context):
        from . import manifest_version

        layout = self.layout
        layout.label(text=f"DiffSpeaker Lip Sync {manifest_version()}")
        layout.prop(self, "model_source", expand=True)
        if self.model_source == "BUILTIN":
            path = builtin_model_path()
            layout.label(text=f"Built-in model: {path.name}" if path else "This build has no built-in model yet.", icon="INFO")
        elif self.model_source == "CHECKPOINT":
            layout.prop(self, "model_path")
        else:
            for name in ("official_path", "official_preset", "official_template", "official_subject", "encoder_config"):
                layout.prop(self, name)
        layout.prop(self, "device")


def preferences(context=None) -> DIFFSPEAKER_AP_preferences:
    context = context or bpy.context
    return context.preferences.addons[ADDON_ID].preferences


classes = (DIFFSPEAKER_AP_preferences,)

register, unregister = bpy.utils.register_classes_factory(classes)
