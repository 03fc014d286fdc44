"""Class names a target dataset shares with a checkpoint: exact (any case, ``_``/``-`` as spaces), plural,
or a common alternative name of a COCO class (VOC's spellings, the driving and thermal sets' names such as
FLIR's and BDD100K's ``motor`` or KITTI's ``van`` and ``tram``, and everyday words).

Transfer uses it to start a target class from the checkpoint class it names (models/transfer.py); ``advise``
uses it to measure how many target classes the checkpoint already knows.
"""

from __future__ import annotations

import re

# Common alternative names of the COCO classes (VOC's spellings first, then those of driving and thermal sets:
# FLIR ADAS, BDD100K, KITTI, VisDrone), for the label-overlap check.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("people", "pedestrian", "human", "man", "woman", "child", "rider", "player", "person sitting"),
    "bicycle": ("bike", "cycle"),
    "car": ("automobile", "sedan", "taxi", "van", "minivan"),
    "motorcycle": ("motorbike", "motor bike", "motor"),
    "airplane": ("aeroplane", "plane", "aircraft", "jet"),
    "boat": ("ship", "vessel"),
    "truck": ("lorry", "pickup truck"),
    "train": ("tram", "streetcar"),
    "traffic light": ("traffic signal", "stoplight"),
    "fire hydrant": ("hydrant",),
    "dog": ("puppy",),
    "cat": ("kitten",),
    "horse": ("pony",),
    "cow": ("cattle", "bull", "calf"),
    "couch": ("sofa",),
    "potted plant": ("pottedplant", "houseplant", "plant"),
    "dining table": ("diningtable", "table"),
    "tv": ("tvmonitor", "tv monitor", "television", "monitor"),
    "cell phone": ("cellphone", "mobile phone", "phone", "smartphone"),
    "sports ball": ("ball", "football", "soccer ball", "basketball"),
    "donut": ("doughnut",),
    "hot dog": ("hotdog",),
    "hair drier": ("hair dryer", "hairdryer"),
    "refrigerator": ("fridge",),
    "teddy bear": ("teddy", "teddybear"),
    "handbag": ("purse",),
    "backpack": ("rucksack",),
    "remote": ("remote control",),
    "wine glass": ("wineglass",),
}


def normalise_name(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", name.strip().lower()))


def match_class_names(target: list[str], checkpoint: list[str]) -> dict[str, str]:
    """``{target name: checkpoint name}`` for the target classes the checkpoint names exactly, in the plural,
    or by a synonym; the first checkpoint class of a name wins."""
    known: dict[str, str] = {}
    for name in checkpoint:
        known.setdefault(normalise_name(name), name)
    alias = {normalise_name(a): known[c] for c, aliases in SYNONYMS.items() if c in known for a in aliases}
    matches = {}
    for name in target:
        key = normalise_name(name)
        singular = key[:-1] if key.endswith("s") else key
        if match := known.get(key) or alias.get(key) or known.get(singular) or alias.get(singular):
            matches[name] = match
    return matches
