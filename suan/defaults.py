"""One home for the defaults that several jobs share: the distillation settings and every preset
(synthetic data, ``suan demo``, ``suan compare``, ``suan scaling``). The CLI's choices and error
messages are read from these tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

from .data.synthetic import SyntheticConfig


# ----------------------------------------------------------------------------------------------
# Online distillation (SPEC section 5)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Distillation:
    """A SUAN teacher and a LightSUAN student trained together. lambda and T were tuned on seeds 0
    and 1 of the demo data: the soft labels carry 4x the weight of the clicks, ramped in over
    the first ``warmup_steps`` (an untrained teacher teaches noise)."""

    teacher: str = "g2"
    student: str = "g0"
    lam: float = 4.0
    temperature: float = 2.0
    warmup_steps: int = 500

    def train_settings(self) -> dict:
        """The matching ``TrainConfig`` fields."""
        return {"distill_lambda": self.lam, "temperature": self.temperature,
                "distill_warmup_steps": self.warmup_steps}


DISTILL = Distillation()


# ----------------------------------------------------------------------------------------------
# Synthetic data (``synthetic:<preset>``)
# ----------------------------------------------------------------------------------------------
DATA_PRESETS: Dict[str, SyntheticConfig] = {
    "tiny": SyntheticConfig(num_users=2000, requests_per_user=8, num_items=300, num_categories=20),
    "demo": SyntheticConfig(num_users=6000, requests_per_user=14, num_items=2000, num_categories=30),
    "compare": SyntheticConfig(num_users=2500, requests_per_user=14, num_items=2000, num_categories=30),
    "small": SyntheticConfig(num_users=20000, requests_per_user=15),
    # the demo's world (2,000 items, 30 categories) with 3.3x the users: 230k training samples,
    # enough data for the scaling sweep's largest grades and for a g3 distillation teacher
    "scaling": SyntheticConfig(num_users=20000, requests_per_user=15, num_items=2000, num_categories=30),
    "medium": SyntheticConfig(num_users=200000, requests_per_user=20),
    "large": SyntheticConfig(num_users=1000000, requests_per_user=25, chunk_users=5000),
}


# ----------------------------------------------------------------------------------------------
# suan demo
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoSettings:
    student_grade: str = DISTILL.student
    teacher_grade: str = DISTILL.teacher
    student_len: int = 30  # the light model reads the 30 most recent behaviors
    # the teacher reads as many: at 50 it was slower (176 s vs 149 s for the demo on 2 cores) and
    # no better (test AUC 0.7337 vs 0.7439, seed 0; 2026-11-29)
    teacher_len: int = 30
    data_preset: str = "demo"
    epochs: int = 2


DEMO = DemoSettings()


# ----------------------------------------------------------------------------------------------
# suan compare
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComparePreset:
    data: str
    grade: str = "g1"
    teacher_grade: Optional[str] = None  # the distilled student's teacher; None: one grade above ``grade``
    epochs: int = 1  # the epoch budget of every model
    early_stopping: int = 0  # patience in epochs on valid AUC (0: every epoch, the last weights)
    dropout: float = 0.0
    batch_size: int = 128
    max_len: int = 30
    lr_grid: Sequence[float] = (1e-3, 3e-3)
    grid_extensions: int = 0  # times the grid grows past an edge where a model's best rate sits
    tune_samples: Optional[int] = 20000  # the grid runs on this many training samples (seed 0); None: all
    seeds: Sequence[int] = (0, 1, 2)
    models: Optional[Sequence[str]] = None  # None: every registered model and recipe
    extra: Sequence[str] = ()  # more entries, e.g. "suan@g2" (SUAN one grade up)


COMPARE_PRESETS: Dict[str, ComparePreset] = {
    "smoke": ComparePreset(data="synthetic:compare"),
    "full": ComparePreset(data="synthetic:demo", epochs=2, lr_grid=(5e-4, 1e-3, 3e-3), seeds=(0, 1, 2, 3, 4)),
    # MovieLens-100K, leak-free histories: every model trained to convergence (early stopping on
    # valid AUC within a 10-epoch budget), lr from a grid on seed 0, five seeds, SUAN also one and
    # two grades up
    "ml100k": ComparePreset(data="movielens-100k", grade="g1", epochs=10, early_stopping=2, dropout=0.1,
                            batch_size=256, lr_grid=(1e-3, 3e-3, 1e-2), grid_extensions=2, tune_samples=None,
                            seeds=(0, 1, 2, 3, 4),
                            extra=("suan@g2", "suan@g3")),
}


# ----------------------------------------------------------------------------------------------
# suan distill-study
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistillStudyPreset:
    """The paper's distillation claim at a fair budget: each LightSUAN student grade distilled from
    SUAN teachers ``teacher_steps`` grades up, lambda x T picked on seed 0's valid AUC, then seeds;
    against LightSUAN alone and SUAN one grade above the student, all on the same budget
    (``compare``'s epochs, early stopping, batch, dropout) and one learning rate."""

    compare: ComparePreset
    students: Sequence[str] = ("g0", "g1")
    teacher_steps: Sequence[int] = (1, 2)
    lambdas: Sequence[float] = (1.0, 4.0)
    temperatures: Sequence[float] = (1.0, 2.0)
    note: str = ""


DISTILL_STUDY_PRESETS: Dict[str, DistillStudyPreset] = {
    "smoke": DistillStudyPreset(
        compare=ComparePreset(data="synthetic:tiny", epochs=1, early_stopping=1, max_len=12, lr_grid=(3e-3,),
                              tune_samples=None, seeds=(0, 1)),
        students=("g0",), teacher_steps=(1,), lambdas=(1.0, 4.0), temperatures=(2.0,), note="about a minute on 2 CPU cores"),
    # lr 3e-3: SUAN g1's rate picked by the ml100k comparison (valid AUC, seed 0)
    "ml100k": DistillStudyPreset(
        compare=ComparePreset(data="movielens-100k", epochs=10, early_stopping=2, dropout=0.1, batch_size=256,
                              lr_grid=(3e-3,), tune_samples=None, seeds=(0, 1, 2)),
        temperatures=(2.0,), note="students g0 and g1, teachers one and two grades up"),
    # lr 3e-4: the rate the cpu scaling sweep picks on valid LogLoss for g1, g2 and g3 (the teachers
    # and SUAN one grade up) at 15k samples of this data; the g0 student alone prefers 3.3e-3 there,
    # so one shared rate handicaps the student, not the reference
    "scaling": DistillStudyPreset(
        compare=ComparePreset(data="synthetic:scaling", epochs=4, early_stopping=1, lr_grid=(3e-4,),
                              tune_samples=None, seeds=(0, 1, 2)),
        note="230k synthetic training samples: enough that a g3 teacher does not overfit"),
}


# ----------------------------------------------------------------------------------------------
# suan scaling
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScalingPreset:
    data: str
    grades: Sequence[str]
    data_sizes: Sequence[int]
    max_len: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    # epochs of a run on D samples: clip(round(epoch_budget / D), 1, max_epochs), with early stopping
    # (patience 1) on ``select_on`` and the best epoch tested; 0 = one epoch each (the old protocol)
    epoch_budget: int = 0
    max_epochs: int = 1
    student_grade: str = "g0"
    distill_teachers: Sequence[str] = ()
    distill_size: Optional[int] = None  # the D of the distillation curve (default: largest)
    # learning rates tried for every grade at ``tune_size`` training samples; each grade keeps the
    # one with the best valid LogLoss for all its runs (the test split never chooses). () = ``lr``
    # for every grade. One rate for all grades left g4 (9.5M parameters) at chance after its first
    # epoch at 1e-3 in the cpu sweep (valid AUC 0.514; 0.628 at 3e-4).
    lr_grid: Sequence[float] = ()
    tune_size: Optional[int] = None  # default: the smallest data size
    # a grade whose best rate is at an edge of the grid tries the next one beyond it (the grid's
    # own ratio), up to this many times, so every choice is bracketed (as `suan compare` does)
    grid_extensions: int = 0
    # the valid score that keeps a run's best epoch and stops it early: the law is fitted on test
    # LogLoss, so runs select on valid LogLoss (valid AUC keeps later epochs whose LogLoss has
    # already turned: g4 at 3e-4 in the cpu sweep kept epoch 3 at 0.620, its epoch 1 had 0.589)
    select_on: str = "logloss"
    # bf16 autocast on CPU (TrainConfig.cpu_bf16): 1.8x on g4's step on an AVX512-BF16 CPU
    cpu_bf16: bool = False
    note: str = ""


SCALING_PRESETS: Dict[str, ScalingPreset] = {
    "smoke": ScalingPreset(data="synthetic:demo", grades=("g0", "g1", "g2", "g3"),
                           data_sizes=(8000, 16000, 32000, 64000), distill_teachers=("g1", "g2"), distill_size=64000,
                           note="under 15 minutes on a 2-core CPU"),
    # g0-g4 span 650x non-embedding parameters, 7.5k-240k samples 32x: about 2.5 hours on one CPU core
    "cpu": ScalingPreset(data="synthetic:scaling", grades=("g0", "g1", "g2", "g3", "g4"),
                         data_sizes=(7500, 15000, 30000, 60000, 120000, 240000), epoch_budget=60000, max_epochs=4,
                         distill_teachers=("g1", "g2", "g3"), distill_size=120000, lr_grid=(1e-3, 3e-4),
                         tune_size=15000, grid_extensions=3, cpu_bf16=True,
                         note="g0-g4 (650x parameters) x 7.5k-230k samples (31x), small D trained up to 4 epochs "
                              "with early stopping, the learning rate per grade picked on valid at 15k samples; "
                              "several hours on a 2-core CPU (g4 trains at ~125 samples/s a core in bf16, ~70 in float32)"),
    "gpu": ScalingPreset(data="synthetic:large", grades=("g0", "g1", "g2", "g3", "g4", "g5", "g6"),
                         data_sizes=(100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 20_000_000),
                         max_len=256, batch_size=1024, lr=5e-4, lr_grid=(1e-3, 5e-4, 2e-4), tune_size=300_000,
                         grid_extensions=1,
                         distill_teachers=("g1", "g2", "g3", "g4", "g5", "g6"),
                         distill_size=3_000_000, note="grades spanning 4000x parameters, data 200x; not yet timed on an H200"),
}


def preset(table: Dict[str, object], name: str, what: str):
    """``table[name]`` or a ``ValueError`` naming the argument and the choices."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"{what}: unknown preset {name!r}; known: {', '.join(table)}") from None
