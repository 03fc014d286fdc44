"""advise: the rule table on constructed profiles, the shift score on real data, JSON output, the command."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from rich.console import Console

from yolo_transfer.advise import measure, rules
from yolo_transfer.advise.report import recommendation_table
from yolo_transfer.advise.rules import Profile, recommend
from yolo_transfer.data import LoadedDataset, Sample, ValidationReport

# A medium-sized, moderately shifted dataset whose classes the checkpoint knows: nothing special.
BASE = Profile(
    images=400,
    val_images=100,
    nc=3,
    min_class_instances=300,
    smallest_class="c",
    max_class_instances=400,
    background_fraction=0.0,
    label_overlap=1.0,
    shift_early=0.3,
    shift_middle=0.3,
    shift_late=0.3,
    shift_overall=0.3,
    objectness=0.5,
)
LOW, HIGH = rules.LOW_SHIFT / 2, rules.HIGH_SHIFT * 2


def profile(**changes) -> Profile:
    return dataclasses.replace(BASE, **changes)


def shift(early: float, middle: float, late: float) -> dict[str, float]:
    overall = (early + middle + late) / 3
    return {"shift_early": early, "shift_middle": middle, "shift_late": late, "shift_overall": overall}


RACCOON = shift(0.05, 0.09, 0.17)  # the shift measured on raccoon (natural photos) at 320 px
LICENSE_PLATES = shift(0.05, 0.18, 0.27)  # ... on 100 license_plates images
DAWN_FOG = shift(1.16, 0.32, 0.42)  # ... on dawn_fog (COCO classes in fog)
THERMAL = shift(9.93, 0.42, 0.42)  # ... on dawn_fog through a simulated thermal-like sensor
MONO = shift(10.14, 0.39, 0.41)  # ... through a simulated monochrome camera
DAWN_FOG_T7 = {"full": 32, "freeze": 57, "staged": 37}  # the advisor's fit of 7 minutes on dawn_fog
LARGE = {"images": 5000, "min_class_instances": 4000, "val_images": 1000}
# the two rows for far data of known classes
FAR_KNOWN_TIME = "high shift, every class known to the checkpoint, and a time budget"
FAR_KNOWN_DATA = "high shift, every class known to the checkpoint, and 100 or more images"
FAR_KNOWN_LARGE = (
    "high shift, every class known to the checkpoint, 100 or more images, and mostly large objects"
)
FAR_KNOWN_LARGE_TIME = (
    "high shift, every class known to the checkpoint, 100 or more images, mostly large objects the detector"
)
# license_plates' vehicles named car through a simulated monochrome camera: 75% of the boxes large
VEHICLES_MONO = {
    "images": 236,
    "objectness": 0.77,
    "large_box_share": 0.75,
    "shift_early": 4.91,
    "shift_middle": 0.62,
    "shift_late": 0.45,
    "shift_overall": 1.54,
}
# dawn_fog's first 50 images through a simulated colour camera at night
FOG_NIGHT_N50 = shift(2.09, 0.41, 0.39)
# dawn_fog cropped around its largest objects through a simulated colour camera at night (objectness 0.36;
# 0.57 in daylight), and the epochs the advisor fitted in 2 and 3 minutes
FOG_CROP_NIGHT = {"images": 193, "large_box_share": 0.743, **shift(1.47, 0.88, 0.43)}
FOG_CROP_NIGHT_T2 = {"full": 19, "staged": 22, "freeze": 33}
FOG_CROP_NIGHT_T3 = {"full": 28, "staged": 33, "freeze": 51}
# license_plates' vehicles named car through that camera: between near and far (near in colour); 100 of them,
# and the epochs the advisor fitted for those in 2 minutes
VEHICLES_NIGHT = {"images": 236, "large_box_share": 0.75, "objectness": 0.76, **shift(0.20, 0.19, 0.27)}
VEHICLES_NIGHT_N100 = {"images": 100, "large_box_share": 0.758, "objectness": 0.75, **shift(0.18, 0.19, 0.27)}
VEHICLES_NIGHT_N100_T2 = {"full": 27, "staged": 30, "freeze": 42}
# 50 of those vehicles in colour (the first draw): near, every class known, objectness 0.78
VEHICLES_N50 = {"images": 50, "objectness": 0.78, **shift(0.05, 0.19, 0.28)}
# aerial_maritime's 60 drone images of boats and cars (objectness 0.32)
DRONE_BOAT_CAR = shift(0.23, 0.23, 0.25)
# 50 images of dawn_fog cropped around its largest objects, through the simulated night camera (0.33)
FOG_CROP_NIGHT_N50 = shift(1.355, 0.899, 0.427)
UNSEEN_TINY = "tiny data whose classes the checkpoint knows but whose objects it does not see yet"

# (profile, expected strategy, the rule's condition that must have decided it)
STRATEGY_CASES = [
    (profile(images=60, label_overlap=0.0, **shift(LOW, LOW, LOW)), "freeze", "tiny data, low shift"),
    (profile(images=60, label_overlap=0.0, objectness=0.2, **shift(LOW, LOW, LOW)), "full", "otherwise"),
    (profile(images=60, **shift(LOW, LOW, LOW)), "head-only", "tiny data whose classes"),
    # dawn_fog-n50: tiny, every class known, and the detector already sees the objects (objectness 0.59)
    (profile(images=50, objectness=0.59, **shift(1.03, 0.33, 0.42)), "head-only", "tiny data whose"),
    # aerial_maritime's boats and cars: tiny, every class known, but seen from a drone (objectness 0.32), and
    # cropped around their largest object (0.41): full 3.6 and 3.4 behind, staged first and 1.4 behind
    (profile(images=60, objectness=0.32, **DRONE_BOAT_CAR), "staged", UNSEEN_TINY),
    (profile(images=60, objectness=0.41, **shift(0.295, 0.338, 0.25)), "staged", UNSEEN_TINY),
    (profile(images=60, label_overlap=0.5, objectness=0.32, **DRONE_BOAT_CAR), "full", "otherwise"),
    (profile(images=100, objectness=0.32, **DRONE_BOAT_CAR), "full", "otherwise"),  # not tiny
    # ... far: 50 images of the cropped fog at night (objectness 0.33): full first, staged 2.9 behind
    (profile(images=50, objectness=0.331, **FOG_CROP_NIGHT_N50), "full", "high shift"),
    (profile(images=60, objectness=0.32, **shift(0.5, 0.5, 0.5)), "full", "high shift"),  # the bound: 0.5
    # dawn_fog-n50 through a simulated thermal-like sensor: the detector sees less (0.39); head-only lost
    (profile(images=50, objectness=0.39, **THERMAL), "full", "high shift"),
    # ... through a simulated monochrome camera: the detector sees them (0.52), but head-only lost 6.3 points
    (profile(images=50, objectness=0.52, **MONO), "full", "high shift"),
    # ... keeping a fifth of the colour (early shift 4.56): head-only 1.9 behind; keeping half (1.93): first
    (profile(images=50, objectness=0.55, **shift(4.56, 0.37, 0.42)), "full", "high shift"),
    (profile(images=50, objectness=0.57, **shift(1.93, 0.35, 0.42)), "head-only", "tiny data whose"),
    # ... through a simulated colour camera at night: colour pixels, objectness 0.475-0.51 on four draws,
    # head-only within 0.3 of the best on each, full 0.8-1.4 behind; the bound moved from 0.5 to 0.45
    (profile(images=50, objectness=0.475, **FOG_NIGHT_N50), "head-only", "tiny data whose"),
    (profile(images=50, objectness=0.51, **shift(2.34, 0.42, 0.41)), "head-only", "tiny data whose"),  # d1
    (profile(images=50, objectness=0.496, **shift(2.42, 0.42, 0.41)), "head-only", "tiny data whose"),  # d2
    (profile(images=50, objectness=0.493, **shift(2.20, 0.43, 0.43)), "head-only", "tiny data whose"),  # d3
    # 50 of license_plates' vehicles (near) by day, two draws, the first at night and zoomed out to half:
    # head-only first on each, full 0.7-1.3 behind
    (profile(**VEHICLES_N50), "head-only", "tiny data whose"),
    (profile(images=50, objectness=0.78, **shift(0.06, 0.19, 0.28)), "head-only", "tiny data whose"),  # d1
    (profile(images=50, objectness=0.75, **shift(0.19, 0.19, 0.27)), "head-only", "tiny data whose"),
    (profile(images=50, objectness=0.83, **shift(0.29, 0.30, 0.39)), "head-only", "tiny data whose"),
    (profile(images=50, objectness=rules.HEAD_OBJECT_LIKE - 0.01, **FOG_NIGHT_N50), "full", "high shift"),
    (profile(images=50, **shift(rules.COLOUR_EARLY_SHIFT - 0.01, LOW, LOW)), "head-only", "tiny data whose"),
    (profile(images=50, **shift(rules.COLOUR_EARLY_SHIFT, LOW, LOW)), "full", "high shift"),  # the bound: 3.0
    (profile(images=100, **shift(1.08, 0.32, 0.42)), "staged", FAR_KNOWN_DATA),  # dawn_fog-n100
    (profile(images=99, objectness=0.39, **THERMAL), "full", "high shift"),  # tiny and not in colour
    (profile(images=50, label_overlap=0.5, **shift(HIGH, HIGH, HIGH)), "full", "high shift"),  # one class new
    (profile(images=50, epochs_fit={"full": 4, "freeze": 8}), "head-only", "tiny data whose"),  # cheapest
    (profile(label_overlap=0.0, **shift(HIGH * 2, LOW, LOW)), "full", "high shift"),  # no surgical rule
    (profile(**LARGE, **shift(HIGH, HIGH, HIGH)), "full", "large data and high shift"),
    (profile(**LARGE, **shift(HIGH * 2, LOW, LOW)), "full", "large data and high shift"),
    (profile(label_overlap=0.0), "full", "otherwise"),
    (profile(**shift(HIGH, HIGH, HIGH)), "staged", FAR_KNOWN_DATA),
    (profile(label_overlap=0.0, **shift(HIGH, HIGH, HIGH)), "full", "high shift"),
    (profile(label_overlap=0.0, **shift(HIGH * 2, LOW, LOW)), "full", "high shift"),  # e.g. bccd
    (profile(label_overlap=0.0, budget_epochs=10, **shift(HIGH, HIGH, HIGH)), "full", "high shift"),
    (profile(budget_epochs=10, label_overlap=0.0), "full", "otherwise"),
    (profile(epochs_fit={"full": 40, "freeze": 50, "lp-ft": 12}, label_overlap=0.0), "full", "otherwise"),
    (profile(), "full", "otherwise"),
    (profile(target_map=0.6, label_overlap=0.0), "full", "a target mAP is stated"),
    (profile(epochs_fit={"full": 4, "freeze": 8}), "freeze", "time budget fits <= 10 epochs"),
    (profile(epochs_fit={"full": 10, "freeze": 15}), "freeze", "time budget fits <= 10 epochs"),  # raccoon t1
    (profile(epochs_fit={"full": 11, "freeze": 16}), "full", "otherwise"),
    (profile(epochs_fit={"full": 4, "freeze": 4}), "full", "otherwise"),
    (profile(label_overlap=0.0, **RACCOON), "full", "low shift, from the first layers"),
    (profile(label_overlap=0.0, **LICENSE_PLATES), "full", "low shift"),
    (profile(label_overlap=0.0, **shift(0.20, 0.22, 0.25)), "full", "otherwise"),  # aerial_maritime
    (profile(**shift(0.05, 0.3, 0.4)), "full", "otherwise"),  # COCO-like pixels, but far in the later layers
    (profile(images=60, label_overlap=0.0, **RACCOON), "freeze", "tiny data, low shift"),  # raccoon-n50
    (profile(epochs_fit={"full": 10, "freeze": 15}, **RACCOON), "freeze", "time budget fits"),
    # near data: freezing's extra epochs led or tied up to 20 full epochs (license_plates-n100, 3 minutes)
    (
        profile(label_overlap=0.0, epochs_fit={"full": 18, "freeze": 26}, **LICENSE_PLATES),
        "freeze",
        "low shift from the first layers on, time budget fits <= 20",
    ),
    (
        profile(label_overlap=0.0, epochs_fit={"full": 25, "freeze": 38}, **LICENSE_PLATES),
        "full",
        "low shift, from the first layers on",
    ),  # 4 minutes as the advisor timed them: more than measured
    (profile(epochs_fit={"full": 18, "freeze": 17}, **RACCOON), "full", "low shift, from the first"),
    (profile(epochs_fit={"full": 18, "freeze": 26}), "full", "otherwise"),  # not near: 10 is the limit
    # far data of known classes under a time budget: staged's cheaper frozen phase buys epochs (dawn_fog t7)
    (profile(epochs_fit=DAWN_FOG_T7, **DAWN_FOG), "staged", FAR_KNOWN_TIME),
    (profile(label_overlap=0.0, epochs_fit=DAWN_FOG_T7, **DAWN_FOG), "full", "high shift"),  # bccd-like
    # dawn_fog through a simulated thermal-like sensor, 3 minutes as advise fitted them (staged 0.5 behind)
    (profile(epochs_fit={"full": 26, "freeze": 45, "staged": 30}, **THERMAL), "staged", FAR_KNOWN_TIME),
    (profile(budget_epochs=30, **THERMAL), "staged", FAR_KNOWN_DATA),
    (profile(label_overlap=0.5, epochs_fit=DAWN_FOG_T7, **DAWN_FOG), "full", "high shift"),  # one class new
    # an epoch budget: staged came within a point of the better at equal epochs on 100 images or more
    (profile(budget_epochs=30, **DAWN_FOG), "staged", FAR_KNOWN_DATA),
    (profile(budget_epochs=30, label_overlap=0.5, **DAWN_FOG), "full", "high shift"),  # one class new
    (profile(epochs_fit={"full": 30, "freeze": 50, "staged": 30}, **DAWN_FOG), "staged", FAR_KNOWN_DATA),
    (profile(epochs_fit={"full": 30, "freeze": 50, "staged": 29}, **DAWN_FOG), "full", "high shift"),  # fewer
    (profile(epochs_fit={"full": 8, "freeze": 14, "staged": 10}, **DAWN_FOG), "freeze", "time budget fits"),
    # 1 minute on the whole dawn_fog set through a simulated monochrome camera: freeze stayed at the untrained
    # checkpoint's level, 6.4 behind full; staged's frozen phase alone fits, so it is not offered
    (profile(epochs_fit={"full": 8, "freeze": 14}, **MONO), "full", "high shift"),
    (profile(epochs_fit=DAWN_FOG_T7, **RACCOON), "full", "low shift, from the first"),  # near: not this row
    # far data of known classes with mostly large boxes: full led staged on license_plates' vehicles
    (profile(budget_epochs=30, **VEHICLES_MONO), "full", FAR_KNOWN_LARGE),
    (
        profile(budget_epochs=30, **(VEHICLES_MONO | {"large_box_share": 0.51})),
        "staged",
        FAR_KNOWN_DATA,
    ),  # zoomed out to a third
    (
        profile(budget_epochs=30, **(VEHICLES_MONO | {"large_box_share": 0.59})),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the vehicles zoomed out to half: full ahead; the thermal-like ones moved the bound from 60% to 55%
    (profile(large_box_share=rules.MOSTLY_LARGE, **DAWN_FOG), "full", FAR_KNOWN_LARGE),  # the bound: 51.5%
    (profile(large_box_share=rules.MOSTLY_LARGE - 0.01, **DAWN_FOG), "staged", FAR_KNOWN_DATA),
    (
        profile(budget_epochs=30, **(VEHICLES_MONO | {"large_box_share": 0.5139})),
        "staged",
        FAR_KNOWN_DATA,
    ),  # the vehicles zoomed out to a third, as measured: staged 0.8 ahead through the thermal-like sensor
    (
        profile(budget_epochs=30, **(VEHICLES_MONO | {"large_box_share": 0.531})),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the thermal-like vehicles zoomed out by 2.6: full 0.9 ahead over five seeds (separated)
    (
        profile(images=193, val_images=50, budget_epochs=30, large_box_share=0.5399, **THERMAL),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the cropped thermal-like fog zoomed out by 1.6: full 2.9 ahead over five seeds
    (
        profile(images=193, val_images=50, budget_epochs=30, large_box_share=0.5057, **THERMAL),
        "staged",
        FAR_KNOWN_DATA,
    ),  # the same zoomed out by 1.7, run after the bound moved to 52%: staged first, full 0.9 behind
    (
        profile(budget_epochs=30, **(VEHICLES_MONO | {"large_box_share": 0.5503})),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the thermal-like vehicles zoomed out by 2.3: full first, staged 0.6 behind
    (
        profile(budget_epochs=30, **(VEHICLES_MONO | {"large_box_share": 0.5246})),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the thermal-like vehicles zoomed out by 2.8: full 0.04 behind staged, 0.4 ahead over five seeds
    (
        profile(budget_epochs=30, **(VEHICLES_MONO | {"large_box_share": 0.5182})),
        "full",
        FAR_KNOWN_LARGE,
    ),  # by 2.9: staged 0.5 behind full, 0.7 over five seeds (staged until the bound moved to 51.5%)
    (
        profile(images=193, val_images=50, budget_epochs=30, large_box_share=0.5247, **THERMAL),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the cropped thermal-like fog zoomed out by 1.66: full first, staged 1.1 behind (3.5 over five seeds)
    (
        profile(images=193, val_images=50, budget_epochs=30, large_box_share=0.5190, **THERMAL),
        "full",
        FAR_KNOWN_LARGE,
    ),  # by 1.67: full 0.2 behind staged, 3.1 ahead over five seeds, which moved the bound from 52%
    (
        profile(images=193, val_images=50, budget_epochs=30, large_box_share=0.5152, **THERMAL),
        "full",
        FAR_KNOWN_LARGE,
    ),  # by 1.675, run after the move, just above the bound: full first, 2.2 ahead over five seeds
    (
        profile(images=193, val_images=50, budget_epochs=30, large_box_share=0.5114, **THERMAL),
        "staged",
        FAR_KNOWN_DATA,
    ),  # by 1.68, just below it: full 7.2 ahead of staged over three seeds, 0.1 over five (the bound stays)
    (
        profile(budget_epochs=30, **(VEHICLES_MONO | {"large_box_share": 0.5161})),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the thermal-like vehicles by 2.92, just above it: full 0.4 behind staged, 0.2 ahead over five seeds
    (
        profile(images=193, val_images=50, budget_epochs=30, large_box_share=0.5171, **THERMAL),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the cropped thermal-like fog by 1.672: staged 4.3 ahead over three seeds, 5.1 over five (a miss)
    (
        profile(budget_epochs=30, **(VEHICLES_MONO | {"large_box_share": 0.5310})),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the monochrome vehicles by 2.6: freeze 1.3 ahead over three seeds, 0.8 over five (a miss)
    (
        profile(budget_epochs=30, **(VEHICLES_MONO | {"large_box_share": 0.5503})),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the monochrome vehicles by 2.3: full 0.2 behind staged over three seeds, first over five (a hit)
    (
        profile(budget_epochs=30, **(VEHICLES_MONO | {"large_box_share": 0.5246})),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the monochrome vehicles by 2.8: full 0.07 behind staged (a hit), first over five seeds
    (profile(epochs_fit=DAWN_FOG_T7, large_box_share=0.75, **DAWN_FOG), "full", FAR_KNOWN_LARGE),  # 32 full
    (profile(epochs_fit=DAWN_FOG_T7, large_box_share=0.514, **DAWN_FOG), "staged", FAR_KNOWN_TIME),
    # mostly large boxes under a time budget of at most 30 full epochs: a frozen backbone's extra epochs
    (
        profile(epochs_fit={"full": 21, "staged": 25, "freeze": 42}, **VEHICLES_MONO),
        "freeze",
        FAR_KNOWN_LARGE_TIME,
    ),
    (
        profile(
            epochs_fit={"full": 11, "freeze": 21},  # staged's phases do not all fit
            **(VEHICLES_MONO | {"shift_early": 5.49, "shift_overall": 1.70, "objectness": 0.58}),
        ),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the thermal-like vehicles at 2 minutes: full first, freeze 3.8 behind (grey pixels below 0.7)
    (
        profile(epochs_fit={"full": 11, "freeze": 20}, **(VEHICLES_MONO | {"objectness": 0.69})),
        "full",
        FAR_KNOWN_LARGE,
    ),  # grey pixels (early shift 4.91 >= 3.0): objectness just below 0.7
    (
        profile(epochs_fit={"full": 11, "freeze": 20}, **(VEHICLES_MONO | {"objectness": 0.70})),
        "freeze",
        FAR_KNOWN_LARGE_TIME,
    ),  # ... and at it
    (
        profile(
            val_images=50,
            epochs_fit={"full": 16, "staged": 19, "freeze": 31},
            **(VEHICLES_MONO | {"images": 193, "objectness": 0.57, "shift_early": 1.21}),
        ),
        "freeze",
        FAR_KNOWN_LARGE_TIME,
    ),  # the cropped fog at 2 minutes, colour pixels: objectness 0.57 >= 0.5 is enough (freeze first)
    (
        profile(epochs_fit={"full": 30, "staged": 36, "freeze": 60}, **VEHICLES_MONO),
        "freeze",
        FAR_KNOWN_LARGE_TIME,
    ),
    (profile(epochs_fit={"full": 31, "staged": 37, "freeze": 62}, **VEHICLES_MONO), "full", FAR_KNOWN_LARGE),
    (profile(epochs_fit={"full": 21, "staged": 25, "freeze": 26}, **VEHICLES_MONO), "full", FAR_KNOWN_LARGE),
    (
        profile(
            val_images=50,
            epochs_fit={"full": 12, "staged": 14, "freeze": 22},
            **(
                VEHICLES_MONO
                | {"images": 193, "objectness": 0.47, "shift_early": 10.30, "shift_overall": 3.15}
            ),
        ),
        "full",
        FAR_KNOWN_LARGE,
    ),  # the cropped fog through the monochrome camera at 2 minutes: the detector does not see the objects
    (profile(images=99, large_box_share=0.75, objectness=0.39, **THERMAL), "full", "high shift"),  # tiny
    (profile(label_overlap=0.5, large_box_share=0.75, **DAWN_FOG), "full", "high shift"),  # one class new
    # through a simulated colour camera at night (run after the rows were set): dawn_fog stays far in colour
    # pixels, with few large boxes; license_plates' vehicles leave the near row for the last one
    (
        profile(
            images=193, budget_epochs=30, large_box_share=0.157, objectness=0.51, **shift(2.30, 0.40, 0.40)
        ),
        "staged",
        FAR_KNOWN_DATA,
    ),
    (
        profile(
            images=100, budget_epochs=30, large_box_share=0.141, objectness=0.50, **shift(2.13, 0.40, 0.40)
        ),
        "staged",
        FAR_KNOWN_DATA,
    ),
    (profile(budget_epochs=30, **VEHICLES_NIGHT), "full", "otherwise"),
    (
        profile(
            images=193,
            epochs_fit={"full": 18, "staged": 21, "freeze": 33},
            large_box_share=0.157,
            objectness=0.51,
            **shift(2.30, 0.40, 0.40),
        ),
        "staged",
        FAR_KNOWN_TIME,
    ),  # dawn_fog at night, 2 minutes
    # the vehicles at night, 2 minutes: not near, so not the near time-budget row's freeze
    (profile(epochs_fit={"full": 14, "staged": 16, "freeze": 26}, **VEHICLES_NIGHT), "full", "otherwise"),
    # the cropped fog at night: at 2 and 3 minutes the detector does not see its objects (< 0.5 on colour
    # pixels), so not the freeze row, which daylight's objectness would take; at 30 epochs the row for
    # mostly large boxes (a miss: staged 6.2 ahead over three seeds, 1.1 over five)
    (profile(objectness=0.36, epochs_fit=FOG_CROP_NIGHT_T2, **FOG_CROP_NIGHT), "full", FAR_KNOWN_LARGE),
    (
        profile(objectness=0.57, epochs_fit=FOG_CROP_NIGHT_T2, **FOG_CROP_NIGHT),
        "freeze",
        FAR_KNOWN_LARGE_TIME,
    ),
    (profile(objectness=0.36, epochs_fit=FOG_CROP_NIGHT_T3, **FOG_CROP_NIGHT), "full", FAR_KNOWN_LARGE),
    (
        profile(objectness=0.57, epochs_fit=FOG_CROP_NIGHT_T3, **FOG_CROP_NIGHT),
        "freeze",
        FAR_KNOWN_LARGE_TIME,
    ),
    (profile(objectness=0.36, budget_epochs=30, **FOG_CROP_NIGHT), "full", FAR_KNOWN_LARGE),
    # 100 of license_plates' vehicles at night: between near and far, not tiny; at 2 minutes not near, so
    # not the near time-budget row's freeze, and not far, so not the freeze row for mostly large boxes
    (profile(budget_epochs=30, **VEHICLES_NIGHT_N100), "full", "otherwise"),
    (profile(epochs_fit=VEHICLES_NIGHT_N100_T2, **VEHICLES_NIGHT_N100), "full", "otherwise"),
]


@pytest.mark.parametrize(("prof", "strategy", "condition"), STRATEGY_CASES)
def test_strategy_rules(prof: Profile, strategy: str, condition: str) -> None:
    rec = recommend(prof)
    assert rec.strategy.value == strategy
    assert rec.strategy.rule.startswith(condition)
    assert rec.strategy.source and rec.strategy.reason


def test_last_row_cites_known_classes_at_night_between_near_and_far() -> None:
    """license_plates' vehicles through the simulated night camera: between near and far, every class known;
    full first at 30 epochs, staged separated behind; at 2 minutes 0.6 behind a frozen backbone; with 100 of
    them 0.6 behind at 30 epochs and 0.4 behind staged at 2 minutes."""
    rec = recommend(profile(budget_epochs=30, **VEHICLES_NIGHT))
    assert rec.strategy.rule == "otherwise" and "shift 0.22, early 0.20, 236 images" in rec.strategy.reason
    assert "through a simulated colour camera at night (early 0.20, overall 0.22, 236 images" in (
        rec.strategy.source
    )
    assert "full 0.619, freeze 0.613 (not separated), staged 0.605 (separated)" in rec.strategy.source
    assert "under 2 minutes (full 14 epochs, freeze 26): freeze 0.618, full 0.613, staged 0.606" in (
        rec.strategy.source
    )
    assert "100 of them (0.18/0.22, 76% large), seeds 0-2: freeze 0.600, full 0.594" in rec.strategy.source
    assert "under 2 minutes (full 27 epochs, freeze 42): staged 0.596, freeze 0.593, full 0.592" in (
        rec.strategy.source
    )


def test_tiny_known_classes_the_detector_does_not_see_get_staged_where_not_far() -> None:
    """Tiny data of known classes below the head-only row's objectness bound, in colour and not far: staged,
    citing the drone views (staged first, full 3.6 behind) and their crop (staged 1.4, full 3.4 behind
    freeze); far data of that kind (the cropped fog at night: full first, staged 2.9 behind) and grey or
    thermal-like pixels keep the far row."""
    rec = recommend(profile(images=60, objectness=0.32, budget_epochs=30, **DRONE_BOAT_CAR))
    assert (rec.strategy.value, rec.batch.value, rec.lr0.value) == ("staged", 8, None)
    assert "60 images < 100, every class known to the checkpoint, but objectness 0.320 < 0.45" in (
        rec.strategy.reason
    )
    assert "in colour (early-layer shift 0.23 < 3.0) and not far (shift 0.24 < 0.5)" in rec.strategy.reason
    assert "full came first, staged 2.9 and 1.5 behind, so far data keeps the far row" in rec.strategy.reason
    assert "a second draw (0.36, 0.87), run after the row kept to data that is not far: full 0.213" in (
        rec.strategy.source
    )
    assert "which head-only cannot (21 to 28 points behind)" in rec.strategy.reason
    assert "staged first and full 3.3 behind at 100" in rec.strategy.reason
    assert "at 100 epochs, run after the row, staged 0.581, full 0.548, freeze 0.528" in rec.strategy.source
    assert "at 30 epochs staged 0.447, full 0.412, freeze 0.350, head-only 0.169" in rec.strategy.source
    assert (
        "(objectness 0.41, shift 0.29), 30 epochs: freeze 0.485, staged 0.471, full 0.451"
        in rec.strategy.source
    )
    assert "(objectness 0.33, shift 0.82), 30 epochs, batch 16: full 0.213, head-only 0.196" in (
        rec.strategy.source
    )
    far = recommend(profile(images=50, objectness=0.331, **FOG_CROP_NIGHT_N50))
    assert (far.strategy.value, far.strategy.rule) == ("full", "high shift")
    assert recommend(profile(images=60, objectness=0.32)).epochs.value == 100  # at 100: staged 0.512
    grey = recommend(profile(images=50, objectness=0.39, **THERMAL))
    assert (grey.strategy.value, grey.strategy.rule) == ("full", "high shift")


def test_near_time_budget_row_names_the_epochs_and_cites_the_time_budget_cases() -> None:
    rec = recommend(profile(label_overlap=0.0, epochs_fit={"full": 18, "freeze": 26}, **LICENSE_PLATES))
    assert "fits 18 epochs of full vs 26 with a frozen backbone" in rec.strategy.reason
    assert "3 minutes (full 14-23 epochs, freeze 25-33), seeds 0-2: 0.487 vs 0.470" in rec.strategy.source
    assert "freeze ahead or within half a point in every case" in rec.strategy.source
    assert "(full 21-22, freeze 38-41), seeds 0-2: 0.723 vs 0.736" in rec.strategy.source  # full led above
    assert "2 minutes (full 11-13, freeze 21-24), seeds 0-2: 0.541 vs 0.524" in rec.strategy.source
    assert "3 minutes on a fast day (full 17, freeze 32): 0.556 vs 0.543" in rec.strategy.source  # edge
    assert "2 minutes on a fast day (full 18, freeze 35), seeds 0-2: 0.717 vs 0.720" in rec.strategy.source
    assert "vehicles named car (236 images, 75% of the boxes large), 2 minutes on a slower day" in (
        rec.strategy.source
    )  # run after the row: freeze first on large boxes too
    assert "(full 28, freeze 54): 0.716 vs 0.716" in rec.strategy.source  # level above the row's 20
    assert "the whole license_plates set at 4 minutes on a fast day (full 23, freeze 42): 0.560" in (
        rec.strategy.source
    )


def test_compute_bound_row_cites_the_far_time_budget_cases() -> None:
    rec = recommend(profile(epochs_fit={"full": 8, "freeze": 14}))
    assert rec.strategy.value == "freeze" and "fits 8 epochs of full vs 14" in rec.strategy.reason
    assert "aerial_maritime 0.168 vs 0.126" in rec.strategy.source  # 1 minute
    assert "whole aerial_maritime set (full 7-9, freeze 15-18 epochs), seeds 0-2: 0.290 vs 0.261" in (
        rec.strategy.source
    )


def test_far_known_classes_time_budget_row_names_the_epochs_and_cites_dawn_fog() -> None:
    rec = recommend(
        profile(images=193, val_images=51, epochs_fit=DAWN_FOG_T7, large_box_share=0.16, **DAWN_FOG)
    )
    assert "fits 37 epochs of staged vs 32 of full" in rec.strategy.reason
    assert "shift 0.63 >= 0.5, every class known to the checkpoint" in rec.strategy.reason
    assert "3 minutes (full 25, staged 30 epochs) 0.267 vs 0.231 (separated)" in rec.strategy.source
    assert "at 30 epochs each, no extra epochs, staged 0.256 vs full 0.250" in rec.strategy.source
    assert "LP-FT (Kumar et al., ICLR 2022)" in rec.strategy.source
    assert "staged 28-29 epochs), seeds 0-2: 0.209 vs 0.214" in rec.strategy.source  # a simulated sensor
    assert "night (0.93), 2 minutes (full 17-18, staged 19 epochs), seeds 0-2: 0.209 vs 0.199" in (
        rec.strategy.source
    )  # the third simulated sensor, run after the rows were set
    assert "came first or within a point at every time budget measured" in rec.strategy.reason
    assert "with 16.0% of the boxes large (< 51.5%)" in rec.strategy.reason
    assert (
        "on mostly large boxes it was first in one of seven cases at 2 and 3 minutes" in rec.strategy.reason
    )
    assert "the cases with mostly large boxes are cited by the row for them" in rec.strategy.source
    assert rec.freeze.value is None  # staged carries its own phases
    assert rec.epochs.value == 37  # the epochs of staged that fit, not of full


def test_far_known_classes_with_large_objects_under_a_time_budget_row_cites_the_ten_cases() -> None:
    """Mostly large boxes the detector sees, under a budget of at most 30 full epochs: freeze, citing the
    seven cases at 2 and 3 minutes it won (monochrome vehicles, cropped fog) and the three it lost
    (thermal-like, objectness below the bound for grey pixels)."""
    rec = recommend(profile(epochs_fit={"full": 21, "staged": 25, "freeze": 42}, **VEHICLES_MONO))
    reason, source = rec.strategy.reason, rec.strategy.source
    assert rec.strategy.value == "freeze" and rec.freeze.value == "10" and rec.epochs.value == 42
    assert (
        "236 images, 75.0% of the boxes large (>= 51.5%), objectness 0.77 (>= 0.5 on colour pixels, >= 0.7 "
        "where the early-layer shift, 4.91, is 3.0 or more)" in reason
    )
    assert "the budget fits 21 epochs of full vs 42 with a frozen backbone" in reason
    assert "came first in all seven such cases measured at 2 and 3 minutes that pass these bounds" in reason
    assert "(objectness 0.58-0.68, below the bound for such pixels) it trailed in all three cases" in reason
    assert "freeze 21 epochs): 0.479 vs 0.453 vs 0.479" in source  # out of sample, the second domain
    assert "freeze 20 epochs): 0.549 vs 0.519 (separated) vs 0.546" in source  # out of sample
    assert "freeze 19-20 epochs): 0.455 vs 0.483 vs 0.453 (freeze separated)" in source  # thermal-like, half
    assert "(full 21, staged 24, freeze 36 epochs): 0.592 vs 0.574 vs 0.576" in source  # 100 images
    assert "(full 22, staged 26, freeze 38 epochs): 0.484 vs 0.527 vs 0.525" in source  # after the bound
    assert "run after the bound, in a fourth (100 of those vehicles, objectness 0.59), 4.4 behind" in reason
    assert "2 minutes (full 13-14, staged 16, freeze 25-26 epochs) 0.616 vs 0.599 vs 0.590" in source
    assert "2 minutes (full 15-16, staged 18-19, freeze 28-31) 0.483 vs 0.400 vs 0.399" in source  # fog
    assert "0.502 vs 0.540 vs 0.509" in source and "0.527 vs 0.568 vs 0.572" in source  # thermal-like
    assert rec.strategy.cites[0] == rules.STUDY and "YOLOv5 maintainer (PR #707, #49)" in rec.strategy.cites


def test_far_known_classes_data_row_cites_the_equal_epoch_cases() -> None:
    """Far data of known classes from 100 images with few large boxes: staged at equal epochs too, citing
    dawn_fog, its draws of 100 images and the simulated sensors, where full missed three times, and the
    vehicles zoomed out, where a frozen backbone led both once, the cropped thermal-like fog at 51.1%,
    where full led over three seeds and the two were level over five, and, run after, dawn_fog through a
    simulated colour camera at night, where staged led and full missed by 1.05 (on 100 of its images the
    three were level)."""
    rec = recommend(profile(images=193, val_images=51, budget_epochs=30, large_box_share=0.16, **DAWN_FOG))
    assert rec.strategy.value == "staged" and rec.strategy.rule == FAR_KNOWN_DATA
    reason, source = rec.strategy.reason, rec.strategy.source
    assert "shift 0.63 >= 0.5, every class known to the checkpoint, 193 images >= 100 and 16.0% of" in reason
    assert "boxes large (< 51.5%)" in reason
    assert "within a point of the better of the two in 20 of the 21 cases measured, full in 17" in reason
    assert "(staged 7.2 behind over three seeds and 0.1 over five at 51.1% of the boxes large)" in reason
    assert "a later rerun 0.256 vs 0.250 (seeds 0-2" in source  # the whole set at 30 epochs
    assert "0.238 vs 0.222 (full a miss by 1.6)" in source  # a draw run to test the row
    assert "100 images 0.260 vs 0.241 (full a miss by 1.9)" in source  # simulated monochrome
    assert "0.213 vs 0.198" in source  # the thermal-like copy at 50 epochs: full's third miss
    assert "a frozen backbone led both once, by 0.4 points" in reason
    assert "(3.33) 0.476 vs 0.478 (freeze 0.482)" in source  # the vehicles zoomed out
    assert "thermal-like sensor (3.37) 0.461 vs 0.453 (seeds 0-4" in source
    assert "after the case at 51.6%: 0.459 vs 0.459, full ahead in 2 of 5), and run after" in source
    assert "zoomed out by 1.7 (4.06, 51% large) 0.377 vs 0.368 (freeze 0.179" in source
    assert "seeds 0-4 0.368 vs 0.376 (4 of 5), and run after the case at 51.5%" in source  # five seeds
    assert "(4.03, 51.1% large) 0.366 vs 0.438 (freeze 0.175; full ahead in 3 of 3, staged a miss" in source
    assert "seeds 0-4 0.390 vs 0.391 (3 of 5); run after the rows were set" in source  # five seeds: level
    assert "camera at night (0.93, early 2.30), dawn_fog, seeds 0-2, 0.209 vs 0.198 (freeze 0.204" in source
    assert "100 of its images 0.224 vs 0.222 (freeze 0.224) - staged within a point" in source
    assert "in 20 of the 21 cases, full in 17, staged 0.2 ahead on average" in source
    assert "5.7-9.3 points behind the better of the two through the grey sensors and 0-0.4 at night" in source
    assert "51.8% large" not in source  # at or above the bound: the next test's row
    assert "51.9% large" not in source
    assert "51.5% large" not in source
    assert "51.6% large" not in source
    assert "51.7% large" not in source
    assert "53% large" not in source  # at or above the bound: the next test's row
    assert "0.607 vs 0.619" not in source  # mostly large boxes: the next test's row
    assert "LP-FT (Kumar et al., ICLR 2022)" in source
    assert rec.freeze.value is None and rec.epochs.value == 30
    near_bound = recommend(profile(images=193, budget_epochs=30, large_box_share=0.5114, **THERMAL))
    assert "51.1% of the boxes large (< 51.5%)" in near_bound.strategy.reason  # not "51%", nor "52%" above it
    no_budget = recommend(profile(images=100, **THERMAL))  # the advice without a budget: 100 epochs of staged
    assert (no_budget.strategy.value, no_budget.epochs.value) == ("staged", 100)


def test_far_known_classes_with_large_objects_row_cites_the_vehicles_and_the_cropped_fog() -> None:
    """Far data of known classes with >= 51.5% of the boxes large: full, citing five seeds of license_plates'
    vehicles through both simulated sensors, where full led, dawn_fog cropped around its largest objects,
    where the two split with the seed, and the vehicles zoomed out to a third, where the lead went."""
    rec = recommend(profile(budget_epochs=30, **VEHICLES_MONO))
    assert rec.strategy.value == "full" and rec.strategy.rule == FAR_KNOWN_LARGE
    reason, source = rec.strategy.reason, rec.strategy.source
    assert (
        "shift 1.54 >= 0.5, every class known to the checkpoint, 236 images >= 100 and 75.0% of the" in reason
    )
    assert "led staged unfreezing in 15 of 20 paired seeds over the four such cases measured" in reason
    assert "run after this row on 20 cases at or above 51.5% (four of them moved the bound down" in reason
    assert "it came first in 11 and within a point of the best in 17" in reason
    assert (
        "6.2 behind staged on the cropped fog through a simulated colour camera at night (1.1 over" in reason
    )
    assert "seeds 0-2: 0.311 vs 0.373 (1 of 3; freeze 0.269, separated; full a miss by 6.2)" in source
    assert "seeds 0-4 0.348 vs 0.359 (3 of 5)" in source  # the cropped fog at night, five seeds
    assert "4.3 points behind staged on the cropped thermal-like fog at 51.7% (5.1 over five seeds" in reason
    assert "1.3 behind a frozen backbone on the monochrome vehicles at 53% (0.8 over five)" in reason
    assert "(the thermal-like vehicles, objectness 0.58-0.68, below the freeze row's 0.7)" in reason
    assert "came first in three of four cases and 0.4 behind staged in the fourth" in reason
    assert "(full 22, staged 26, freeze 38 epochs): 0.484 vs 0.527 vs 0.525 (freeze separated)" in source
    assert rec.strategy.cites.count(rules.STUDY) == 1  # two of the study's findings, one title
    assert "(3.57, 56% large, objectness 0.46), 2 minutes (full 16, staged 18, freeze 28-29" in source
    assert "epochs): full 0.460 vs staged 0.390 (freeze 0.458)" in source  # grey, unseen objects: full first
    # colour, objects the detector does not see, run after every row was set: full first
    assert "(0.84, 74% large, objectness 0.36), 2 minutes (full 17, staged 20, freeze 33-35" in source
    assert "0.219 (freeze 0.270; neither separated)" in source
    assert "it came first in all three at 2 minutes, a frozen backbone 0.2 to 6.5 points behind" in reason
    assert "and at 3 minutes on the fog at night 0.9 behind a frozen backbone (not separated)" in reason
    assert "3 minutes (full 26-27, staged 28-31, freeze 46-49 epochs): full 0.339 vs staged 0.340" in source
    assert "seeds 0-4 0.586 vs 0.574 (full ahead in 4 of 5, separated)" in source  # thermal-like
    assert "seeds 0-4 0.614 vs 0.607 (4 of 5)" in source  # monochrome
    assert "seeds 0-4: 0.581 vs 0.571 (5 of 5), where freeze led both at 0.594" in source  # 100 of them
    assert "seeds 0-4 0.433 vs 0.446 (2 of 5)" in source  # the cropped fog: staged ahead over five seeds
    assert "monochrome 0.478 vs 0.476, thermal-like 0.453 vs 0.461 - the lead went" in source  # zoomed out
    assert "thermal-like sensor (1.68, 76% large), seeds 0-2: 0.537 vs 0.532" in source  # out of sample
    assert "fog through the thermal-like sensor (3.32, 74% large), seeds 0-2: 0.458 vs 0.420" in source
    assert "seeds 0-4 0.453 vs 0.395 (4 of 5)" in source  # the same, five seeds
    assert "zoomed out to two thirds (1.99, 65% large), seeds 0-2: 0.551 vs 0.530" in source  # near the bound
    assert "(2.44, 59% large, where the bound of 60% gave staged), seeds 0-2: 0.532 vs 0.502" in source
    assert "zoomed out to two thirds (3.77, 56% large), seeds 0-2: 0.413 vs 0.386" in source  # after the move
    assert "monochrome vehicles zoomed out to half (2.34, 59% large), seeds 0-2: 0.563 vs 0.550" in source
    assert "by 2.6 (3.02, 53% large), seeds 0-2: 0.479 vs 0.469 (2 of 3" in source  # moved the bound
    assert "seeds 0-4 0.482 vs 0.473 (4 of 5, separated)" in source  # the same, five seeds
    assert "(3.91, 54% large), seeds 0-2: 0.327 vs 0.329 (1 of 3; freeze 0.182), seeds 0-4 0.368" in source
    assert "out by 2.3 (2.74, 55% large), seeds 0-2: 0.500 vs 0.494 (3 of 3" in source
    assert "by 2.8 (3.20, 52.5% large), seeds 0-2: 0.470 vs 0.471 (1 of 3; freeze 0.428" in source  # level
    assert "seeds 0-4 0.473 vs 0.468 (3 of 5)" in source  # the same, five seeds
    assert "(4.00, 52.5% large), seeds 0-2: 0.358 vs 0.348 (1 of 3; freeze 0.225), seeds 0-4 0.367" in source
    assert "by 2.9 (3.30, 51.8% large), seeds 0-2: 0.471 vs 0.466 (1 of 3; freeze 0.424" in source
    assert "by 1.67 (4.01, 51.9% large), seeds 0-2: 0.354 vs 0.356 (2 of 3; freeze 0.204)" in source
    assert "seeds 0-4 0.369 vs 0.338 (4 of 5) - over five seeds full ahead at both" in source  # moved it
    assert "zoomed out by 1.7 (4.06, 51% large)" not in source  # below the bound: the equal-epoch row's
    assert "51.1% large" not in source
    assert "(4.02, 51.5% large), seeds 0-2: 0.377 vs 0.347 (2 of 3; freeze 0.191), seeds 0-4 0.361" in source
    assert "(3.32, 51.6% large), seeds 0-2: 0.462 vs 0.466 (1 of 3; freeze 0.422, separated)" in source
    assert "(4.02, 51.7% large), seeds 0-2: 0.335 vs 0.378 (2 of 3; freeze 0.177; full a miss" in source
    assert "seeds 0-4 0.327 vs 0.378 (2 of 5)" in source  # five seeds: staged 5.1 ahead
    assert "(2.96, 53.1% large), seeds 0-2: 0.496 vs 0.504 (1 of 3; freeze 0.509, full a miss" in source
    assert "seeds 0-4 0.501 vs 0.502 (3 of 5; freeze 0.509)" in source  # five seeds: within a point
    assert "(2.66, 55.0% large), seeds 0-2: 0.524 vs 0.526 (1 of 3; freeze 0.514), seeds 0-4 0.526" in source
    assert "by 2.8 (3.15, 52.5% large), seeds 0-2: 0.494 vs 0.495 (2 of 3; freeze 0.490)" in source
    assert "seeds 0-4 0.497 vs 0.495 (4 of 5; freeze 0.489)" in source  # five seeds: full first
    assert "'you always obtain better mAP by training all layers'" in source
    assert rec.freeze.value is None and rec.epochs.value == 30


def test_reasons_name_the_measurement() -> None:
    rec = recommend(profile(images=60, label_overlap=0.0, **shift(0.1, 0.1, 0.1)))
    assert "60 images" in rec.strategy.reason and "0.10" in rec.strategy.reason
    assert "Ultralytics fine-tuning guide" in rec.strategy.source
    rec = recommend(profile(**shift(1.5, 0.6, 0.6)))
    assert "shift 0.90 >= 0.5" in rec.strategy.reason


def test_the_report_cites_sources_by_title_and_advise_json_keeps_what_they_found() -> None:
    """The printed table names each source; what it found (the study's numbers) stays in the JSON."""
    rec = recommend(profile(budget_epochs=30, **VEHICLES_MONO)).to_dict()
    strategy = rec["reasons"]["strategy"]
    assert strategy["cites"] == [rules.STUDY, "YOLOv5 maintainer (PR #707, #49)", rules.DISSIMILAR_LR.title]
    assert "seeds 0-4 0.586 vs 0.574" in strategy["source"]  # a finding of the study row behind it
    assert "'you always obtain better mAP by training all layers'" in strategy["source"]
    console = Console(record=True, width=2000)
    console.print(recommendation_table({"recommendation": rec}))
    printed = console.export_text()
    assert rules.STUDY in printed and "YOLOv5 maintainer (PR #707, #49)" in printed
    assert "Li et al., ICLR 2020 (Rethinking the hyperparameters for fine-tuning)" in printed
    assert "0.586 vs 0.574" not in printed and "you always obtain better mAP" not in printed
    assert "advise.json (reasons.*.source)" in printed


def test_freeze_depth() -> None:
    tiny_similar = {"images": 40, **shift(LOW, LOW, LOW)}
    head_only = recommend(profile(**tiny_similar))  # every class known: the head-only strategy
    assert (head_only.strategy.value, head_only.freeze.value) == ("head-only", None)
    frozen = recommend(profile(**tiny_similar, label_overlap=0.5))
    assert frozen.freeze.value == "10"  # the backbone
    assert frozen.freeze.reason == "freeze the backbone (its first 10 modules); neck and head train"
    p6 = profile(**tiny_similar, label_overlap=0.5, backbone_modules=12)
    assert recommend(p6).freeze.value == "12"  # a P6 backbone
    assert recommend(profile()).freeze.value is None  # full: the strategy says what trains


def test_learning_rate_is_the_strategys_own() -> None:
    """Every built-in carries its measured lr0; the advice never overrides it (an --lr0 0.0033 once did)."""
    for prof in (
        profile(),
        profile(images=60, **shift(LOW, LOW, LOW)),
        profile(**LARGE, **shift(HIGH, HIGH, HIGH)),
    ):
        rec = recommend(prof)
        assert rec.lr0.value is None and "docs/advisor-study.md" in rec.lr0.source
        assert "--lr0" not in rec.train_args("d.yaml", "w.pt", imgsz=320, device="cpu")


def test_batch_and_epochs_follow_the_data_size() -> None:
    small = recommend(profile(images=24))
    assert small.batch.value == 4  # 24 images: batch 4 gives 6 steps per epoch
    assert recommend(profile(images=2)).batch.value == 2
    medium = recommend(profile(images=400))
    assert medium.batch.value == 16
    # yolov5's 100 epochs, never fewer: BiT's 500 steps would be 20 epochs here, 40 on bccd, where 100 epochs
    # of yolov5's defaults beat 30 of full fine-tuning
    assert medium.epochs.value == rules.DEFAULT_EPOCHS == 100
    assert "yolov5's default of 100" in medium.epochs.reason
    assert "bccd full 0.589 -> 0.617" in medium.epochs.source
    assert "bccd full 0.454 -> 0.566" in medium.epochs.source  # 50 images at the advised batch, out of sample
    assert "6.2-11.2 on three sets over three seeds" in medium.epochs.reason
    assert "150 epochs, seed 0: bccd full 0.575" in medium.epochs.source  # no further gain past yolov5's 100
    assert "seeds 0-2, run after this row: full 0.191 -> 0.211" in medium.epochs.source  # whole thermal-like
    assert "full 0.217 -> 0.228 (-1.0 with seeds 0 and 1; 50: 0.231)" in medium.epochs.source  # whole mono
    assert "full 0.191 -> 0.211 (50 epochs: 0.198), staged 0.189 -> 0.219 (50: 0.213)" in medium.epochs.source
    assert "seeds 0-2, full 0.241 -> 0.231" in medium.epochs.source  # 100 monochrome images: it lost
    assert "seeds 0-2, full 0.187 -> 0.189, staged 0.182 -> 0.193" in medium.epochs.source  # 100 thermal-like
    assert "yolov5 defaults 0.043 -> 0.113" in medium.epochs.source  # 100 thermal-like images
    assert "staged 0.260 -> 0.237, freeze 0.167 -> 0.163" in medium.epochs.source  # frozen: no gain either
    assert "+1.1 and -2.3 on 100 of their images; full at batch 8 +1.5 and -0.5 on 50" in medium.epochs.reason
    assert "full at batch 8 at both, run later: thermal-like 0.133 -> 0.148" in medium.epochs.source
    assert "staged +3.0 and +0.1 on dawn_fog's whole thermal-like and monochrome" in medium.epochs.reason
    assert "monochrome full 0.225 -> 0.206, staged 0.224 -> 0.184" in medium.epochs.source  # 50 images
    assert "staged 0.151 -> 0.149, freeze 0.115 -> 0.114" in medium.epochs.source  # 50, frozen: no gain
    assert recommend(profile(images=100_000)).epochs.value == 100  # 10k steps = 1.6 epochs
    assert recommend(profile(images=6)).epochs.value == 167  # batch 2: 500 steps of 3 per epoch
    assert recommend(profile(images=3)).epochs.value == rules.MAX_EPOCHS


def test_budgets_set_the_schedule() -> None:
    assert recommend(profile(budget_epochs=7)).epochs.value == 7
    rec = recommend(profile(epochs_fit={"full": 12, "freeze": 14}))
    assert (rec.strategy.value, rec.epochs.value) == ("full", 12)
    assert "12 epochs of 'full'" in rec.epochs.reason
    rec = recommend(profile(epochs_fit={"full": 3, "freeze": 6}))
    assert (rec.strategy.value, rec.epochs.value) == ("freeze", 6)
    # a time budget that fits more than the schedule without one is used to its end, as compare plans it
    assert recommend(profile(epochs_fit={"full": 140, "freeze": 200})).epochs.value == 140
    roomy = recommend(profile(epochs_fit={"full": 500, "freeze": 600}))
    assert (roomy.epochs.value, roomy.epochs.rule) == (rules.MAX_EPOCHS, "--budget time=MIN")
    assert roomy.patience.value == 30  # a long schedule stops when it stalls


def test_augmentation_and_patience() -> None:
    assert recommend(profile(budget_epochs=5)).hyp.value == "none"
    assert recommend(profile()).hyp.value == "low"
    assert recommend(profile(images=30_000, model_size="s")).hyp.value == "med"
    assert recommend(profile(images=30_000, model_size="x")).hyp.value == "high"
    assert recommend(profile()).patience.value == 0  # 100 epochs: no early stopping
    assert recommend(profile(budget_epochs=30)).patience.value == 0
    assert recommend(profile(budget_epochs=300, val_images=20)).patience.value == 50
    assert recommend(profile(budget_epochs=300)).patience.value == 30


def test_every_rule_is_reachable() -> None:
    """Each row of the table decides some field for at least one constructed profile."""
    profiles = [case[0] for case in STRATEGY_CASES] + [
        profile(images=24, budget_epochs=5),
        profile(images=40, **shift(LOW, LOW, LOW)),
        profile(images=30_000, model_size="x", val_images=20),
        profile(images=30_000, epochs_fit={"full": 50, "freeze": 60}),
        profile(budget_epochs=300, val_images=20),
        profile(budget_epochs=300),
    ]
    used = set()
    for prof in profiles:
        rec = recommend(prof)
        used |= {(name, getattr(rec, name).rule) for name in rules.FIELDS}
    table = {(name, rule.condition) for rule in rules.RULES for name in rule.effect}
    assert table - used == set()


def test_notes() -> None:
    assert [note.render(BASE) for note in rules.NOTES if note.predicate(BASE)] == []
    odd = profile(background_fraction=0.3, anchor_fit=0.9, min_class_instances=20, imgsz=160, model_size="s")
    notes = [note.render(odd) for note in rules.NOTES if note.predicate(odd)]
    assert len(notes) == len(rules.NOTES)
    assert any("30% of the training images have no labels" in note for note in notes)
    assert any("class 'c' has only 20 instances (largest: 400)" in note for note in notes)
    assert any("fit 90.0% of the boxes" in note for note in notes)
    assert any("calibrated at imgsz 320; at 160" in note for note in notes)
    assert any("with yolov5s they are not measured" in note for note in notes)


def test_command_parses_with_the_real_cli() -> None:
    from yolo_transfer.cli import build_parser

    rec = recommend(profile(images=40, val_images=10, **shift(LOW, LOW, LOW)))
    args = build_parser().parse_args(rec.train_args("my data/d.yaml", "w.pt", imgsz=320, device="cpu"))
    assert (args.command, args.data, args.weights) == ("train", "my data/d.yaml", "w.pt")
    assert (args.strategy, args.freeze, args.epochs, args.batch) == ("head-only", None, rec.epochs.value, 8)
    assert (args.hyp, args.lr0, args.patience, args.imgsz) == ("low", None, 0, 320)
    assert args.handler == "yolo_transfer.engine.trainer:train_command"
    assert rec.command("my data/d.yaml", "w.pt", imgsz=320, device="cpu").startswith(
        "yolo-transfer train --data 'my data/d.yaml' --weights w.pt --strategy head-only --epochs"
    )


def test_advised_strategies_are_builtins_with_the_measured_lr() -> None:
    from yolo_transfer.strategies import list_strategies, load_strategy

    builtins = list_strategies()
    decided = {value for rule in rules.RULES for value in [rule.effect.get("strategy")] if value}
    assert decided <= set(builtins)
    measured = {name: 0.003 if name == "head-only" else 0.01 for name in decided}  # docs/advisor-study.md
    assert {name: load_strategy(name, epochs=10).phases[0].lr0 for name in decided} == measured


# --- measurements -------------------------------------------------------------------------------------------


def test_label_overlap_exact_synonyms_and_new() -> None:
    coco = ["person", "bicycle", "car", "airplane", "dog", "tv", "dining table"]
    overlap = measure.label_overlap(
        ["Person", "aeroplane", "dogs", "tv_monitor", "raccoon", "Dining-Table"], coco
    )
    assert overlap["exact"] == ["Person", "Dining-Table"]
    assert overlap["synonym"] == {"aeroplane": "airplane", "dogs": "dog", "tv_monitor": "tv"}
    assert overlap["new"] == ["raccoon"]
    assert overlap["fraction"] == pytest.approx(5 / 6)
    assert measure.label_overlap(["RBC", "WBC"], coco)["fraction"] == 0.0


def _sample(labels: list[list[float]], width: int = 640, height: int = 480) -> Sample:
    return Sample(Path("x.jpg"), np.array(labels, dtype=np.float32).reshape(-1, 5), width, height)


def test_data_scale_counts_and_box_sizes() -> None:
    train = [
        _sample([[0, 0.5, 0.5, 0.02, 0.02], [0, 0.5, 0.5, 0.1, 0.1], [1, 0.5, 0.5, 0.5, 0.5]]),
        _sample([[0, 0.5, 0.5, 0.3, 0.4]], width=1280, height=960),  # same relative size at any resolution
        _sample([]),
    ]
    data = LoadedDataset(
        ["a", "b", "c"], Path("."), Path("d.yaml"), train, [_sample([])], [], ValidationReport([])
    )
    anchors = np.array([[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]]], dtype=float)
    scale = measure.data_scale(data, anchors, imgsz=640)
    assert (scale["images"], scale["val_images"], scale["instances"]) == (3, 1, 4)
    assert scale["instances_per_class"] == {"a": 3, "b": 1, "c": 0}
    assert scale["smallest_class"] == {"name": "c", "instances": 0}
    assert scale["background_fraction"] == pytest.approx(1 / 3)
    # at COCO scale (long side 640): 12.8x9.6 px small, 64x48 medium, 320x240 and 192x192 large
    sizes = scale["box_sizes"]
    assert sizes["shares"] == {"small": 0.25, "medium": 0.25, "large": 0.5}
    assert sizes["distance_to_coco"] == pytest.approx(0.5 * (0.16 + 0.09 + 0.26))
    # best anchor ratios: 12.8x9.6 fits 10x13; 64x48 fits 62x45; 320x240 is 5.1x the largest (62x45 -> no),
    # 192x192 is 3.2x 59x119 wide and 1.6x tall -> yes
    assert sizes["anchor_fit"] == pytest.approx(0.75)


def test_symmetric_kl_of_gaussians() -> None:
    zero, one = torch.zeros(3), torch.ones(3)
    assert torch.allclose(measure.symmetric_kl(zero, one, zero, one), torch.zeros(3))
    assert torch.allclose(measure.symmetric_kl(zero, one, one, one), torch.ones(3))  # 0.5 each way
    # variances 1 and 4, same mean: (1/8 + 4/2) - 1
    assert measure.symmetric_kl(zero, one, zero, 4 * one)[0].item() == pytest.approx(1.125)


def test_batchnorm_inputs_merge_batches_exactly() -> None:
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    batches = [torch.randn(n, 3, 5, 7) * 3 + 1 for n in (2, 5, 3)]
    inputs = measure.BatchNormInputs(model)
    with inputs.recording(), torch.no_grad():
        for batch in batches:
            model.model(batch)
    features = model.model[0](torch.cat(batches)).detach()
    var, mean = torch.var_mean(features, dim=(0, 2, 3), correction=0)
    count, merged_mean, squares = inputs.totals["1"]
    assert count == 10 * 5 * 7
    assert torch.allclose(merged_mean.float(), mean, atol=1e-5)
    assert torch.allclose((squares / count).float(), var, rtol=1e-4)
    bn = model.model[1]  # fresh running statistics: mean 0, variance 1
    eps = torch.full((4,), bn.eps)
    expected = measure.symmetric_kl(torch.zeros(4), 1 + eps, mean.double(), var.double() + eps).mean()
    assert inputs.shift()["1"] == pytest.approx(expected.item(), rel=1e-4)
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    assert inputs.shift()["1"] == pytest.approx(0.0, abs=1e-6)
    stages = {"early": range(0, 5), "middle": range(5, 10), "late": range(10, 24)}
    summary = measure.summarise_shift({"1.bn": 0.5, "1.cv.bn": 1.5, "6.bn": 3.0, "12.bn": 1.0}, stages)
    assert (summary["early"], summary["middle"], summary["late"]) == (1.0, 3.0, 1.0)
    assert summary["stages"] == {"early": [0, 4], "middle": [5, 9], "late": [10, 23]}
    assert summary["overall"] == pytest.approx(5 / 3)


@pytest.mark.parametrize(
    ("cfg", "stages"),
    [
        ("yolov5n", {"early": [0, 4], "middle": [5, 9], "late": [10, 23]}),
        ("yolov5n6", {"early": [0, 4], "middle": [5, 11], "late": [12, 32]}),  # a P6 backbone has 12 modules
    ],
)
def test_shift_stages_follow_the_architecture(cfg: str, stages: dict) -> None:
    from yolo_transfer.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg, nc=2)
    batches = [(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8),)]
    shift = measure.shift_and_objectness(model, batches, "cpu")["shift"]
    assert shift["stages"] == stages
    per_module = {int(i): v for i, v in shift["per_module"].items()}
    for stage, (first, last) in stages.items():
        inside = [v for i, v in per_module.items() if first <= i <= last]
        assert shift[stage] == pytest.approx(np.mean(inside))
    assert max(per_module) == stages["late"][1]  # the last neck module; Detect has no BatchNorm


# --- real data against the official COCO yolov5n ----------------------------------------------------------

SUBSET = (
    8  # coco8 has 8 images: every dataset is measured on samples of the same size (the KL grows as n shrinks)
)


def _shifts(model, source, subsets: int) -> list[dict]:
    """Shift and objectness of ``subsets`` disjoint, seeded random SUBSET-image samples of a dataset."""
    from yolo_transfer.data import build_dataloader, load_dataset, load_hyp

    data = load_dataset(source)
    pool = data.train + data.val
    order = np.random.default_rng(0).permutation(len(pool))
    results = []
    for k in range(subsets):
        chosen = [pool[i] for i in order[k * SUBSET : (k + 1) * SUBSET]]
        loader = build_dataloader(chosen, 320, SUBSET, augment=False, hyp=load_hyp("none"))
        results.append(measure.shift_and_objectness(model, loader, "cpu"))
    return results


def test_shift_orders_coco8_raccoon_bccd(official_weights: Path) -> None:
    from yolo_transfer.models import load_model

    model, _ = load_model(official_weights)
    coco8 = _shifts(model, shared_path("data", "coco8", "coco8.yaml"), 1)[0]
    raccoon = _shifts(model, shared_path("data", "raccoon"), 3)
    bccd = _shifts(model, shared_path("data", "bccd"), 3)
    overall = {
        name: [r["shift"]["overall"] for r in rs] for name, rs in [("raccoon", raccoon), ("bccd", bccd)]
    }
    # every sample of each dataset is in order, not just the averages
    assert coco8["shift"]["overall"] < min(overall["raccoon"])
    assert 3 * max(overall["raccoon"]) < min(overall["bccd"])
    # microscopy is an input-level shift: the early layers see most of it
    assert all(r["shift"]["early"] > 2 * r["shift"]["late"] for r in bccd)
    assert all(r["shift"]["early"] < r["shift"]["late"] for r in raccoon)
    # the COCO detector finds object-like things in COCO and raccoon images, much less in blood smears
    assert coco8["objectness"]["mean_top_k"] > 1.5 * max(r["objectness"]["mean_top_k"] for r in bccd)


def test_advise_json_output(official_weights: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    from yolo_transfer.cli import build_parser, main
    from yolo_transfer.engine.cost import PLANNED_SHARE
    from yolo_transfer.strategies import list_strategies

    data = shared_path("data", "coco8", "coco8.yaml")
    argv = ["advise", "--data", str(data), "--weights", str(official_weights), "--imgsz", "160"]
    argv += ["--project", str(tmp_path)]
    assert main([*argv, "--budget", "time=1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    for stage in ("overall", "early", "middle", "late"):
        assert isinstance(result["shift"][stage], float) and result["shift"][stage] > 0
    assert result["scale"]["images"] == 4 and result["scale"]["val_images"] == 4
    assert result["labels"]["fraction"] == 1.0  # coco8 uses the checkpoint's own 80 names
    assert set(result["compute"]["strategies"]) == set(list_strategies())
    assert result["compute"]["budget_s"] == 60
    planned_s = 60 * PLANNED_SHARE  # the share of the budget a schedule is planned to fill
    for name in ("full", "freeze", "yolov5-default"):  # one phase: the epochs that fit are budget // epoch
        entry = result["compute"]["strategies"][name]
        assert entry["epochs_fit"] == min(int(planned_s // entry["epoch_s"]), 1000)
    rec = result["recommendation"]
    assert rec["strategy"] in list_strategies()
    assert set(rec["reasons"]) == set(rules.FIELDS)
    assert all(reason["reason"] and reason["source"] for reason in rec["reasons"].values())
    args = build_parser().parse_args(shlex.split(rec["command"])[1:])
    assert (args.command, args.strategy, args.epochs, args.imgsz) == (
        "train",
        rec["strategy"],
        rec["epochs"],
        160,
    )

    assert main(["advise", "--data", str(data), "--weights", "missing.pt"]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_strategy_rules_cite_the_study_rows_behind_them() -> None:
    """Both sides of the shift threshold name the measured cases that put full fine-tuning first (the far
    row also those it missed); the tiny-data and compute-bound rows name the cases where the frozen backbone
    held its own, and tiny data's halved batch the runs at the advised batch (two draws)."""
    far = recommend(profile(label_overlap=0.0, **shift(HIGH, HIGH, HIGH)))
    assert far.strategy.rule == "high shift"
    assert "docs/advisor-study.md" in far.strategy.source and "bccd" in far.strategy.source
    assert "the two cases where this row missed" in far.strategy.source  # dawn_fog under time budgets
    assert "thermal-like sensor (shift 3.05-3.08), 30 epochs at batch 16" in far.strategy.source  # 50 images
    assert "thermal-like staged 0.149, full 0.148 (1.9 behind with seeds" in far.strategy.source  # 100 epochs
    assert "freeze 0.114, yolov5 defaults 0.089 (both separated)" in far.strategy.source
    assert "0.166 (neither separated), yolov5 defaults 0.096 (separated)" in far.strategy.source  # 50 mono
    near = recommend(profile(**RACCOON))
    assert near.strategy.rule.startswith("low shift")
    assert "raccoon" in near.strategy.source and "license_plates" in near.strategy.source
    assert near.strategy.value == "full" and near.freeze.value is None
    assert "license_plates-n150" in near.strategy.source and "7 of the 8 such cases" in near.strategy.reason
    assert "--strategy freeze" in near.strategy.reason  # the cheaper alternative is named
    assert "vehicles as COCO's car (0.05/0.19, 236 images, one known class)" in near.strategy.source
    assert "early-layer shift 0.05 < 0.1" in near.strategy.reason
    middle = recommend(profile())
    assert middle.strategy.rule == "otherwise" and "aerial_maritime" in middle.strategy.source
    assert "15-minute budget" in middle.strategy.source  # the row held with 29 full epochs to freeze's 59-61
    tiny = recommend(profile(images=50, label_overlap=0.0, **shift(LOW, LOW, LOW)))
    assert tiny.strategy.rule.startswith("tiny data") and "raccoon-n50" in tiny.strategy.source
    assert "another draw of 50 images of each" in tiny.strategy.source  # the row out of sample
    assert "advised 100 epochs and batch 8, seeds 0-2" in tiny.strategy.source  # at the schedule it advises
    assert "freeze 0.519 (neither separated" in tiny.strategy.source  # license_plates: freeze 1.6 behind full
    known = recommend(profile(images=50, **shift(HIGH, HIGH, HIGH)))
    assert known.strategy.value == "head-only" and "dawn_fog-n50" in known.strategy.source
    assert "simulated thermal-like sensor (objectness 0.39)" in known.strategy.source  # the bound held
    assert "early-layer shift 1.00 < 3.0" in known.strategy.reason
    assert "simulated monochrome camera" in known.strategy.source  # ... and the early-shift bound's cases
    far = recommend(profile(images=50, objectness=0.52, **MONO))
    assert far.strategy.rule == "high shift"  # 50 monochrome images: too few for the known-classes row
    assert "monochrome camera (3.11-3.15): full 0.225" in far.strategy.source
    night = recommend(profile(images=50, objectness=0.475, **FOG_NIGHT_N50))  # 50 foggy images at night
    assert night.strategy.value == "head-only" and "objectness 0.47 >= 0.45" in night.strategy.reason
    assert "objectness 0.475-0.51, within 0.3 points of the best on four draws" in night.strategy.reason
    assert "objectness 0.475, just below the bound of 0.5 then, so full): head-only 0.225" in (
        night.strategy.source
    )
    assert "its draw 1 (2.34, objectness 0.51, so head-only): freeze 0.227" in night.strategy.source
    assert "the bound moved from 0.5 to 0.45, fitted on those three draws" in night.strategy.source
    vehicles = recommend(profile(**VEHICLES_N50))  # near, every class known, 50 images
    assert vehicles.strategy.value == "head-only"
    assert "license_plates' vehicles, by day" in vehicles.strategy.reason
    assert "zoomed out to half (0.83; untrained 0.561): head-only 0.555" in vehicles.strategy.source
    assert "at 0.003 (the built-in since)" in vehicles.strategy.source  # head-only.yaml's rate, measured
    assert "at a third of the other built-ins' rate" in vehicles.strategy.reason
    assert "0.003 for head-only" in vehicles.lr0.reason and vehicles.lr0.value is None  # no --lr0 override
    bound = recommend(profile(epochs_fit={"full": 6, "freeze": 10}, **shift(HIGH, HIGH, HIGH)))
    assert bound.strategy.rule.startswith("time budget") and "1-minute budget" in bound.strategy.source
    assert "simulated monochrome camera, 1 minute" in bound.strategy.source  # the colour bound's case
    assert "early-layer shift 1.00 < 3.0 (colour pixels)" in bound.strategy.reason
    assert "batch 8 vs 16" in tiny.batch.source and "batch 8 vs 16" not in middle.batch.source
    assert "another draw of 50 images of four of them" in tiny.batch.source  # the batch row out of sample
    assert "full 0.133 vs 0.146 and 0.211 vs 0.225 (-0.013 and -0.014" in tiny.batch.source  # sensor copies
