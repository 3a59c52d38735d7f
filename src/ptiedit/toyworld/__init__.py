"""The shapes world: procedural scenes, their renderer and captions, ground-truth edits and an attribute reader.

Modules: scene (specifications), render, captions, tokenizer, edits (ground-truth edits and their prompts),
reader (recovers a scene from an image; needs scipy), train (trains the embedded tiny Stable Diffusion).
Only the light modules are re-exported here, so importing the package pulls in neither torch nor scipy.
"""
from .captions import caption
from .edits import Edit, apply_edit, describe_edit, edit_mask, random_edit, target_prompt
from .render import render
from .scene import Obj, Scene, random_scene

__all__ = ["Edit", "Obj", "Scene", "apply_edit", "caption", "describe_edit", "edit_mask", "random_edit",
           "random_scene", "render", "target_prompt"]
