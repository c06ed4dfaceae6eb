"""Procedural ventrodorsal hip-extended radiographs with exact ground truth — hipgen's embedded data set.

>>> from hipgen.phantom import PhantomSpec, render_phantom
>>> sample = render_phantom(PhantomSpec(na_left=98.0, na_right=111.0), seed=7)
>>> sample.record("x.png").class_left
'small'
"""

from hipgen.phantom.render import RENDERER_VERSION, PhantomSample, place_keypoints, render_phantom
from hipgen.phantom.spec import DISTRIBUTIONS, PhantomSpec, sample_spec

__all__ = [
    "DISTRIBUTIONS",
    "RENDERER_VERSION",
    "PhantomSample",
    "PhantomSpec",
    "place_keypoints",
    "render_phantom",
    "sample_spec",
]
