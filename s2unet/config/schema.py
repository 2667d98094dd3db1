"""The run configuration's sections as typed dataclasses (defaults, ranges, documentation)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from .ranges import as_values, extra_keys, ranged
from .text import TextConfig


# ----------------------------------------------------------------------------------------- data
@dataclass
class WindowConfig:
    """CT intensity window in Hounsfield units; ``preset`` fills level/width.

    ``preset: none`` leaves the data alone and scales its dtype range (8-bit data) or its
    min/max to 0..1. ``auto`` does the same for 8/16-bit data but applies the lung window to
    volumes whose values reach below -500 (Hounsfield units), so a model trained on 8-bit
    slices sees lung-windowed input when given CT in HU from another hospital.
    """

    preset: Literal["auto", "none", "lung", "mediastinum", "soft_tissue", "bone", "custom"] = "auto"
    level: Optional[float] = ranged("(-inf, inf)", None)
    width: Optional[float] = ranged("(0, inf)", None)


@dataclass
class SplitConfig:
    """How cases (patients) are split; never by slice.

    mode ``ratio`` draws a seeded split, ``kfold`` takes fold ``fold`` of ``folds`` as
    validation (the test list, if any, is held out first), ``list`` uses the lists as given.
    ``group`` is the cross-source split: ``groups`` maps every case to its source (hospital,
    scanner); the cases of ``train_groups`` are split into train and val by ``val_ratio``, and
    the cases of ``test_groups`` (default: every other group) are the test split, so the test
    score says how the model travels to a source it never saw.
    """

    mode: Literal["ratio", "kfold", "list", "group"] = "ratio"
    val_ratio: float = ranged("[0, 1)", 0.2)  # of all cases
    test_ratio: float = ranged("[0, 1)", 0.0)
    folds: int = ranged("[2, inf)", 5)
    fold: int = ranged("[0, inf)", 0)
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    # group mode: a JSON ({case: group} or [{"case", "group"}, ...]) or CSV (columns case,
    # group) file, relative to data.root
    groups: str = ""
    train_groups: list[str] = field(default_factory=list)
    test_groups: list[str] = field(default_factory=list)


@dataclass
class AugmentConfig:
    """Augmentation suited to radiographs and CT slices (applied to training data only)."""

    enabled: bool = True
    # Probabilities and sizes; 0 switches a step off. scale, brightness and contrast are
    # relative changes 1 +- x: at 1 or more an image could shrink to nothing or flip its sign.
    hflip: float = ranged("[0, 1]", 0.0)  # off by default: left/right anatomy is not symmetric in X-rays
    vflip: float = ranged("[0, 1]", 0.0)
    rotate_deg: float = ranged("[0, 180]", 10.0)
    scale: float = ranged("[0, 1)", 0.1)
    translate: float = ranged("[0, 1]", 0.05)  # of the image side
    affine_prob: float = ranged("[0, 1]", 0.5)
    brightness: float = ranged("[0, 1)", 0.1)
    contrast: float = ranged("[0, 1)", 0.1)
    gamma: float = ranged("[0, inf)", 0.0)
    noise_std: float = ranged("[0, inf)", 0.0)
    intensity_prob: float = ranged("[0, 1]", 0.5)
    # Robustness to other sources (each off by default; see s2unet.data.transforms).
    blur_sigma: float = ranged("[0, inf)", 0.0)  # largest Gaussian blur sigma, pixels
    clahe: float = ranged("[0, 1]", 0.0)  # probability of CLAHE local contrast equalisation (kornia)
    window_jitter: float = ranged("[0, 1)", 0.0)  # HU volumes: window level and width moved by up to this x width
    crop_min: float = ranged("(0, 1]", 1.0)  # random resized crop: smallest side fraction kept (1 = off)
    zoom_out: float = ranged("[0, inf)", 0.0)  # shrink by up to 1 / (1 + zoom_out) inside a zero border
    rot90: float = ranged("[0, 1]", 0.0)  # probability of a random 90/180/270 degree rotation (unknown orientation)


@dataclass
class DataConfig:
    """Where the images and labels are and how they become model inputs.

    ``kind: image`` pairs files in ``images`` with files of the same stem in each folder of
    ``labels`` (one folder per label for multi-label tasks). ``kind: volume`` pairs NIfTI
    volumes in ``images`` with label volumes of the same name in ``labels[0]`` and cuts them
    into slices along ``axis``. Relative paths are resolved against ``root``.
    """

    kind: Literal["image", "volume"] = "image"
    root: str = "."
    images: str = "images"
    labels: list[str] = field(default_factory=lambda: ["masks"])
    label_names: list[str] = field(default_factory=list)
    task: Literal["binary", "multilabel", "multiclass"] = "binary"
    num_classes: int = ranged("[0, inf)", 0)  # multiclass only: label values 0..num_classes-1 (0 = background)
    # Of the mask's value range, for 0/255 and anti-aliased masks; 0 or 1 would make every
    # pixel (or none) foreground.
    mask_threshold: float = ranged("(0, 1)", 0.5)
    image_size: int = ranged("[1, inf)", 352)  # s2unet: a multiple of the encoder's stride (checked with the model)
    # volumes
    axis: int = ranged("[0, 2]", 2)
    window: WindowConfig = field(default_factory=WindowConfig)
    context_slices: bool = False  # 2.5D: neighbouring slices as the three channels
    # After windowing, every slice/image (training and inference): "percentile" stretches its
    # 1st-99th percentiles to 0..1, "clahe" equalises local contrast (kornia CLAHE), "equalize"
    # equalises the histogram (values become ranks), so 8-bit, CLAHE-processed and HU inputs
    # reach the model on a comparable scale.
    normalize: Literal["none", "percentile", "clahe", "equalize"] = "none"
    max_train_slices: int = ranged("[0, inf)", 0)  # few-label training: keep N training slices (seeded), 0 = all
    # Volumes labelled on some slices only (s2unet.data.labelled): "auto" reads
    # <root>/labelled_slices.json when it exists (the label app writes it), "" reads none.
    labelled_slices: str = "auto"
    # Rehearsal while fine-tuning on a few new labels: the training cases of this checkpoint's
    # run (read with its data settings) are mixed in at rehearse_share of the draws, so a short
    # fine-tune cannot forget the source it learnt from ("" = off).
    rehearse_from: str = ""
    rehearse_share: float = ranged("(0, 1)", 0.5)
    lesion_oversample: float = ranged("[0, 1)", 0.0)  # share of training draws taken from slices with a lesion
    cache_mb: int = ranged("[0, inf)", 2048)
    reorient: bool = True  # serve volumes in ``orientation`` by their geometry (False: as stored)
    # The orientation convention (s2unet.io.case.ORIENTATION): "radiological-v1" slices show what
    # 3D Slicer shows. "ras-v0" (closest RAS, anterior-down) is what checkpoints written before
    # the convention were trained with; they are read with it.
    orientation: Literal["radiological-v1", "ras-v0"] = "radiological-v1"
    # both
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = ranged("[0, inf)", 2)

    @property
    def served(self) -> Union[bool, str]:
        """How the readers serve volumes (``read_case``'s ``reorient``): the orientation, or False."""
        return self.orientation if self.reorient else False


# ---------------------------------------------------------------------------------------- model
@dataclass
class AdapterConfig:
    """Low-rank adapters ahead of the encoder's stages (or blocks)."""

    placement: Literal["stage", "block", "none"] = "stage"
    rank: int = ranged("[1, inf)", 8)
    alpha: float = ranged("(0, inf)", 8.0)
    dropout: float = ranged("[0, 1)", 0.0)


@dataclass
class AttentionLoraConfig:
    """Optional LoRA on the attention projections of every block, through peft."""

    enabled: bool = False
    rank: int = ranged("[1, inf)", 4)
    alpha: float = ranged("(0, inf)", 4.0)
    dropout: float = ranged("[0, 1)", 0.0)


@dataclass
class PromptedConfig:
    """Fine-tuning of a prompted SAM-family model (``model.arch: prompted_sam``).

    The encoder is ``model.encoder`` with its SAM checkpoint (``model.weights``); what trains is
    peft LoRA on the encoder's attention (``model.attention_lora.enabled``) and/or the mask
    decoder (``decoder``: ``full``, ``lora`` or ``none``). Training prompts: a ground-truth
    ``box`` whose sides move by up to ``box_jitter`` of the box side, or the ``mean_points``
    (``n_points`` fixed points of the mean training mask, no ground truth at test time); then up
    to ``clicks`` correction clicks drawn from the current error, run without gradients, the
    loss on the last round. Validation uses the same prompt source, without clicks.
    """

    decoder: Literal["full", "lora", "none"] = "full"
    decoder_lora_rank: int = ranged("[1, inf)", 8)
    prompt: Literal["box", "mean_points"] = "box"
    box_jitter: float = ranged("[0, 1)", 0.1)
    n_points: int = ranged("[1, inf)", 2)
    clicks: int = ranged("[0, inf)", 0)


@dataclass
class ModelConfig:
    """Architecture: s2unet (encoder, adapters, decoder), a CNN baseline trained the same way,
    or a fine-tuned prompted SAM-family model (``prompted_sam``)."""

    arch: str = "s2unet"  # a registered architecture (s2unet.models.archs; config.architectures)
    cnn_pretrained: bool = False  # CNN baselines: ImageNet encoder weights (needs them on disk)
    encoder: str = "sam2.1_hiera_tiny"
    weights: str = "default"  # "default" (official checkpoint), "random" or a file path
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    attention_lora: AttentionLoraConfig = field(default_factory=AttentionLoraConfig)
    decoder_channels: list[int] = ranged("[1, inf)", default_factory=lambda: [128, 64, 32])
    train_encoder: bool = False  # full fine-tuning of the trunk; off by design
    prompted: PromptedConfig = field(default_factory=PromptedConfig)


# ----------------------------------------------------------------------------------------- loss
@dataclass
class LossConfig:
    """Loss on every deep-supervision output, weighted from the deepest head to the last."""

    # A loss of the registry in s2unet.losses (which checks the name and the loss's own keys).
    name: str = "structure"
    deep_supervision_weights: list[float] = ranged("[0, inf)", default_factory=lambda: [0.25, 0.5, 1.0])
    # The named loss's own keys, written flat in the section: ``loss: {name: dice_focal, gamma: 2}``.
    params: dict[str, Any] = extra_keys()


# ---------------------------------------------------------------------------------- postprocess
@dataclass
class PostprocessConfig:
    """Cleaning of the binary prediction, applied by validation and ``infer.py`` (the
    checkpoint stores it; ``infer.py --no-postprocess`` skips it).

    ``keep_largest``: keep the N largest connected components of each channel (3D components
    in volumes); one number for every channel or one per channel, e.g. ``[2]`` for a lungs
    label (two lungs); empty keeps everything. ``fill_holes``: fill holes enclosed by the
    foreground (per slice in volumes).
    """

    keep_largest: list[int] = ranged("[1, inf)", default_factory=list)
    fill_holes: bool = False


# ---------------------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    """Optimisation, validation and checkpointing."""

    epochs: int = ranged("[1, inf)", 20)
    steps_per_epoch: int = ranged("[0, inf)", 0)  # 0 = one pass over the training slices
    batch_size: int = ranged("[1, inf)", 8)
    lr: float = ranged("(0, inf)", 1e-3)
    weight_decay: float = ranged("[0, inf)", 1e-4)
    warmup_steps: int = ranged("[0, inf)", 50)
    accumulate: int = ranged("[1, inf)", 1)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    grad_clip: float = ranged("[0, inf)", 1.0)  # 0 = no clipping
    # Exponential moving average of the trained weights, validated and saved instead of the
    # last ones (s2unet.engine.averaging); about 1 / (1 - ema) steps long, 0 = off.
    ema: float = ranged("[0, 1)", 0.0)
    val_every: int = ranged("[1, inf)", 1)  # epochs
    val_max_cases: int = ranged("[0, inf)", 0)  # 0 = all validation cases
    metric: Literal["dice", "iou"] = "dice"
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    threads: int = ranged("[0, inf)", 0)  # 0 = torch default
    compile: bool = False  # torch.compile the training model (measured: no gain on CPU)
    # Decoder-only runs (adapter placement none, no attention LoRA) without augmentation see
    # the same encoder features every epoch: compute them once and keep them (fp16).
    cache_features: bool = True
    feature_cache_mb: int = ranged("[0, inf)", 4096)  # in memory; beyond this, features spill to the run dir


@dataclass
class Config:
    """A whole run."""

    name: str = "run"
    seed: int = ranged("[0, inf)", 0)  # numpy's generators refuse negative seeds
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    text: TextConfig = field(default_factory=TextConfig)

    @property
    def out_channels(self) -> int:
        """Channels of the prediction: one per label, or one per class for ``multiclass``."""
        if self.data.task == "multiclass":
            return self.data.num_classes
        return max(1, len(self.data.label_names) or len(self.data.labels))

    def to_dict(self) -> dict[str, Any]:
        """Nested plain values, as a YAML file writes them (extra keys flat in their section)."""
        return as_values(self)


WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "soft_tissue": (50.0, 350.0),
    "bone": (400.0, 1800.0),
}
