"""Synthetic training data: a procedural mannequin head (`head`), an articulation rig that
turns phoneme timings into vertex offsets on it (`rig`), and the phoneme segment type both
sides share with the TTS pipeline (`segments`). Pure numpy: no torch, no bpy."""
