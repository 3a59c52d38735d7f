"""The shapes world: procedural scenes, their renderer and captions, ground-truth edits and an attribute reader.

Modules: scene (specifications), backgrounds (patterns, textures, photo crops), photos (their sources, licences and
held-out split), world (random textured-world scenes), render, captions, tokenizer, edits (ground-truth edits and
their prompts), reader (recovers a scene from an image; needs scipy). Training the embedded model on this world is
ptiedit.training.
Only the light modules are re-exported here, so importing the package pulls in neither torch nor scipy.
"""
from .backgrounds import Pattern, Photo, Texture
from .captions import caption
from .edits import Edit, apply_edit, describe_edit, edit_mask, random_edit, target_prompt
from .render import render
from .scene import Obj, Scene, random_scene
from .world import random_world_scene

__all__ = ["Edit", "Obj", "Pattern", "Photo", "Scene", "Texture", "apply_edit", "caption", "describe_edit",
           "edit_mask", "random_edit", "random_scene", "random_world_scene", "render", "target_prompt"]
