"""Prompt generators on hand-made masks: exact boxes and centres, seeded bounded jitter,
corrective clicks, fixed mean-mask points, draft prompts and the oracle flag."""
from __future__ import annotations

import re

import numpy as np
import pytest

from s2unet.config import ConfigError
from s2unet.prompts import (
    STRATEGIES,
    PromptInputs,
    create_strategy,
    Prompts,
    box_around_mask,
    boxes_per_component,
    farthest_interior_points,
    fixed_points_from_mean_mask,
    mean_mask_region,
    next_correction_click,
    prompts_from_draft,
)


@pytest.fixture
def two_squares() -> np.ndarray:
    """A 4x4 square (rows 2-5, cols 3-6) and a larger 6x6 one (rows 10-15, cols 20-25)."""
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:6, 3:7] = True
    mask[10:16, 20:26] = True
    return mask


def test_two_squares_give_two_exact_boxes_largest_first(two_squares: np.ndarray) -> None:
    prompts = boxes_per_component(two_squares)
    np.testing.assert_array_equal(prompts.boxes, [[20, 10, 25, 15], [3, 2, 6, 5]])
    assert prompts.uses_ground_truth and prompts.points is None and prompts.n_objects == 2


def test_diagonal_neighbours_are_one_component() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = mask[2, 2] = True
    np.testing.assert_array_equal(boxes_per_component(mask).boxes, [[1, 1, 2, 2]])


def test_box_around_mask_and_empty_masks(two_squares: np.ndarray) -> None:
    np.testing.assert_array_equal(box_around_mask(two_squares).boxes, [[3, 2, 25, 15]])
    empty = np.zeros((8, 8), dtype=bool)
    for prompts in (box_around_mask(empty), boxes_per_component(empty), farthest_interior_points(empty)):
        assert prompts.n_objects == 0 and prompts.uses_ground_truth


def test_farthest_point_of_a_5x9_rectangle_is_its_centre() -> None:
    mask = np.zeros((11, 15), dtype=bool)
    mask[3:8, 3:12] = True  # rows 3..7, cols 3..11
    prompts = farthest_interior_points(mask)
    np.testing.assert_array_equal(prompts.points, [[[7, 5]]])
    np.testing.assert_array_equal(prompts.labels, [[1]])


def test_farthest_point_counts_the_image_edge_as_border() -> None:
    mask = np.zeros((9, 9), dtype=bool)
    mask[:, :5] = True  # touches the top, bottom and left edges
    x, y = farthest_interior_points(mask).points[0, 0]
    assert (x, y) == (2, 4)


def test_one_point_per_component(two_squares: np.ndarray) -> None:
    points = farthest_interior_points(two_squares).points[:, 0]
    assert len(points) == 2
    for x, y in points:
        assert two_squares[int(y), int(x)]


def test_jitter_is_seeded_and_stays_in_bounds(two_squares: np.ndarray) -> None:
    exact = boxes_per_component(two_squares).boxes
    a = boxes_per_component(two_squares, jitter=0.2, rng=np.random.default_rng(3)).boxes
    b = boxes_per_component(two_squares, jitter=0.2, rng=np.random.default_rng(3)).boxes
    c = boxes_per_component(two_squares, jitter=0.2, rng=np.random.default_rng(4)).boxes
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, exact)
    sides = np.stack([exact[:, 2] - exact[:, 0] + 1, exact[:, 3] - exact[:, 1] + 1], axis=1)
    assert np.all(np.abs(a - exact) <= 0.2 * np.tile(sides, 2) + 1e-5)
    # A huge jitter is clipped to the image and keeps x0 <= x1, y0 <= y1.
    wild = boxes_per_component(two_squares, jitter=5.0, rng=np.random.default_rng(0)).boxes
    h, w = two_squares.shape
    assert np.all(wild >= 0) and np.all(wild[:, [0, 2]] <= w - 1) and np.all(wild[:, [1, 3]] <= h - 1)
    assert np.all(wild[:, 0] <= wild[:, 2]) and np.all(wild[:, 1] <= wild[:, 3])


def test_correction_click_in_largest_false_negative_region() -> None:
    gt = np.zeros((30, 30), dtype=bool)
    gt[2:12, 2:12] = True  # 10x10 object
    gt[20:23, 20:23] = True  # 3x3 object
    pred = np.zeros_like(gt)
    pred[20:23, 20:23] = True  # the small one found, the big one missed
    pred[0, 29] = True  # a one-pixel false positive
    click = next_correction_click(pred, gt)
    assert click is not None and click.label == 1 and click.uses_ground_truth
    assert gt[int(click.y), int(click.x)] and not pred[int(click.y), int(click.x)]
    assert 5 <= click.x <= 8 and 5 <= click.y <= 8  # the middle of the missed square


def test_correction_click_in_false_positive_region_is_negative() -> None:
    gt = np.zeros((30, 30), dtype=bool)
    gt[2:8, 2:8] = True
    pred = gt.copy()
    pred[15:25, 15:25] = True  # a large false positive
    pred[2, 2] = False  # a one-pixel miss
    click = next_correction_click(pred, gt)
    assert click is not None and click.label == 0
    assert pred[int(click.y), int(click.x)] and not gt[int(click.y), int(click.x)]
    assert next_correction_click(gt, gt) is None


def test_fixed_mean_mask_points_lie_inside_the_mean_mask() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((12, 40, 50), dtype=bool)
    for m in masks:  # two "lungs" that wobble a little from image to image
        dy, dx = rng.integers(-2, 3, size=2)
        m[10 + dy : 32 + dy, 5 + dx : 20 + dx] = True
        m[10 + dy : 32 + dy, 28 + dx : 45 + dx] = True
    region = mean_mask_region(masks)
    for n in (1, 2, 5):
        prompts = fixed_points_from_mean_mask(masks, n)
        assert not prompts.uses_ground_truth
        assert prompts.points.shape == (n, 1, 2)
        for x, y in prompts.points[:, 0]:
            assert region[int(y), int(x)]
    two = fixed_points_from_mean_mask(masks, 2).points[:, 0, 0]
    assert (two < 25).sum() == 1  # one point in each lung


def test_fixed_points_survive_small_scattered_targets() -> None:
    masks = np.zeros((10, 32, 32), dtype=bool)
    for i, m in enumerate(masks):  # small lesions that never overlap half of the time
        m[4 + i : 8 + i, 10:14] = True
    prompts = fixed_points_from_mean_mask(masks, 1)
    assert prompts.n_objects == 1


def test_rescaled_prompts_keep_pixel_centres() -> None:
    prompts = Prompts(np.array([[0, 0, 99, 49]], np.float32), np.array([[[49.5, 24.5]]], np.float32),
                      np.ones((1, 1), np.int64), False)
    moved = prompts.rescaled((50, 100), (100, 200))
    np.testing.assert_allclose(moved.points, [[[99.5, 49.5]]])
    np.testing.assert_allclose(moved.boxes, [[0.5, 0.5, 198.5, 98.5]])  # pixel 99 of 100 covers 198..199 of 200


def test_prompts_from_draft_use_no_ground_truth(two_squares: np.ndarray) -> None:
    draft = two_squares.copy()
    draft[0, 0] = True  # speckle below min_area
    prompts = prompts_from_draft(draft)
    assert not prompts.uses_ground_truth
    np.testing.assert_array_equal(prompts.boxes, boxes_per_component(two_squares).boxes)
    assert prompts.points.shape == (2, 1, 2)
    assert prompts.without_points().points is None


# Keys a strategy cannot do without (the others have defaults).
REQUIRED = {"draft_boxes": {"draft": "runs/x/best.pt"}}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_prompts_and_records_the_oracle_flag(name: str, two_squares: np.ndarray) -> None:
    strategy = create_strategy(name, REQUIRED.get(name))
    fixed = fixed_points_from_mean_mask(two_squares[None], 2) if strategy.needs_training_masks else None
    prompts = strategy.prompts(PromptInputs(two_squares, np.random.default_rng(0), fixed))
    assert prompts.uses_ground_truth == strategy.uses_ground_truth
    assert prompts.n_objects >= 1
    assert strategy.rounds == (5 if strategy.corrects else 0)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_refuses_unknown_keys_by_name(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown config key methods\[3\]\.jiter.*\(prompt {name}\)"):
        create_strategy(name, {**REQUIRED.get(name, {}), "jiter": 0.1}, "methods[3]")


@pytest.mark.parametrize("name, values, message", [
    ("box_per_component", {"jitter": -0.1}, "prompt.jitter must be >= 0, got -0.1"),
    ("iterative", {"rounds": -1}, "prompt.rounds must be >= 0, got -1"),
    ("points_fixed_mean", {"n_points": 0}, "prompt.n_points must be >= 1, got 0"),
    ("draft_boxes", {}, "prompt draft_boxes and the draft checkpoint go together"),
    ("box_whle", {}, "prompt.prompt: 'box_whle' is not a registered prompt strategy (did you mean 'box_whole'?)"),
])
def test_strategy_keys_are_checked_like_config_keys(name: str, values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_strategy(name, values)


@pytest.mark.parametrize("name, values, text", [
    ("box_per_component", {"jitter": 0.1}, ", jitter 0.1"),
    ("box_per_component", {}, ""),
    ("box_whole", {"jitter": 0.25}, ", jitter 0.25"),
    ("points_farthest", {}, ""),
    ("points_fixed_mean", {"n_points": 3}, ", 3 points"),
    ("draft_boxes", {"draft": "a/best.pt"}, ", draft from a/best.pt"),
    ("iterative", {"rounds": 4}, ", 4 corrective clicks"),
])
def test_descriptions_name_the_parameters(name: str, values: dict, text: str) -> None:
    assert create_strategy(name, values).describe() == text
