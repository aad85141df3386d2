"""Feature schemas, model configurations and the grade table (SPEC sections 2-4)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from suan_kernels import AttentionPattern


@dataclass(frozen=True)
class FieldSpec:
    """One categorical field: its name and vocabulary size (id 0 is padding / unknown)."""

    name: str
    vocab_size: int


@dataclass(frozen=True)
class Schema:
    """What one sample holds (SPEC section 2).

    * ``behavior_fields``: categorical fields of every behavior token, concatenated into the
      token, so ``d_model = embed_dim * len(behavior_fields)``.
    * ``target_fields``: names of the behavior fields a candidate carries (its embeddings are
      shared with the behavior fields of the same name); the target token is their concat,
      zero-padded to d_model.
    * ``feature_fields``: user-profile and context fields, one token of width d_model each.
    * ``num_dense``: dense numeric features (0 means missing).
    """

    behavior_fields: Tuple[FieldSpec, ...]
    target_fields: Tuple[str, ...]
    feature_fields: Tuple[FieldSpec, ...]
    num_dense: int = 0

    def __post_init__(self):
        names = [f.name for f in self.behavior_fields]
        if len(set(names)) != len(names):
            raise ValueError(f"behavior_fields: duplicate names {names}")
        for t in self.target_fields:
            if t not in names:
                raise ValueError(f"target_fields: {t!r} is not a behavior field ({names})")
        if not self.behavior_fields:
            raise ValueError("behavior_fields: at least one field is needed")
        if not self.target_fields:
            raise ValueError("target_fields: at least one field is needed")

    @property
    def num_behavior_fields(self) -> int:
        return len(self.behavior_fields)

    @property
    def num_features(self) -> int:
        return len(self.feature_fields)

    def target_field_index(self) -> List[int]:
        names = [f.name for f in self.behavior_fields]
        return [names.index(t) for t in self.target_fields]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "Schema":
        return Schema(
            behavior_fields=tuple(FieldSpec(**f) for f in d["behavior_fields"]),
            target_fields=tuple(d["target_fields"]),
            feature_fields=tuple(FieldSpec(**f) for f in d["feature_fields"]),
            num_dense=int(d.get("num_dense", 0)),
        )


def default_schema() -> Schema:
    """The schema of the embedded synthetic data (``suan.data.synthetic``)."""
    return Schema(
        behavior_fields=(
            FieldSpec("item", 20001),
            FieldSpec("category", 101),
            FieldSpec("brand", 501),
            FieldSpec("action", 5),
        ),
        target_fields=("item", "category", "brand"),
        feature_fields=(
            FieldSpec("age", 8),
            FieldSpec("gender", 3),
            FieldSpec("city_tier", 6),
            FieldSpec("hour", 25),
            FieldSpec("weekday", 8),
            FieldSpec("slot", 11),
        ),
        num_dense=4,
    )


@dataclass
class ModelConfig:
    """Hyper-parameters of SUAN / LightSUAN.

    ``window`` / ``dilation`` / ``num_global`` set LightSUAN's sparse self-attention pattern
    (SPEC section 5); all None/0 means the dense SUAN pattern.
    """

    schema: Schema = field(default_factory=default_schema)
    embed_dim: int = 8
    num_layers: int = 2
    num_heads: int = 2
    max_len: int = 64
    num_time_buckets: int = 40
    dropout: float = 0.1
    head_hidden: Tuple[int, ...] = (128, 64)
    head_activation: str = "relu"  # "relu" or "dice"
    window: Optional[int] = None
    dilation: Optional[int] = None
    num_global: int = 0
    attention_backend: str = "auto"
    grade: Optional[str] = None
    # ablations (all on in SUAN): the time-bucket term of the relative bias, the cross-attention to
    # the feature tokens (off: the block skips cross-attention and gate), the MSGate (off: an
    # even mix (x + c) / 2)
    use_time_bias: bool = True
    use_cross_attention: bool = True
    use_msgate: bool = True

    def __post_init__(self):
        if self.embed_dim < 1 or self.num_layers < 1 or self.num_heads < 1:
            raise ValueError("embed_dim, num_layers, num_heads: must be >= 1")
        if self.d_model % self.num_heads != 0:
            raise ValueError(f"num_heads: {self.num_heads} must divide d_model = {self.d_model}")
        if self.head_activation not in ("relu", "dice"):
            raise ValueError(f"head_activation: 'relu' or 'dice', got {self.head_activation!r}")
        if self.max_len < 1:
            raise ValueError("max_len: must be >= 1")
        self.pattern  # noqa: B018  (validates window / dilation / num_global)
        self.head_hidden = tuple(self.head_hidden)

    @property
    def d_model(self) -> int:
        return self.embed_dim * self.schema.num_behavior_fields

    @property
    def pattern(self) -> AttentionPattern:
        """The self-attention pattern of behavior rows."""
        return AttentionPattern(self.window, self.dilation, self.num_global)

    @property
    def sparse(self) -> bool:
        return self.pattern.sparse

    def with_pattern(self, pattern: AttentionPattern) -> "ModelConfig":
        return self.replace(window=pattern.window, dilation=pattern.dilation, num_global=pattern.num_global)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["schema"] = self.schema.to_dict()
        d["head_hidden"] = list(self.head_hidden)
        return d

    @staticmethod
    def from_dict(d: dict) -> "ModelConfig":
        d = dict(d)
        d["schema"] = Schema.from_dict(d["schema"])
        d["head_hidden"] = tuple(d.get("head_hidden", (128, 64)))
        return ModelConfig(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


@dataclass(frozen=True)
class Grade:
    """One model grade: depth x width x heads x behavior-sequence length (SPEC section 4)."""

    name: str
    layers: int
    embed_dim: int
    heads: int
    max_len: int
    head_hidden: Tuple[int, ...]


# Non-embedding parameters span ~15K (g0) to ~60M (g6) on the default schema: >1000x.
GRADES: Tuple[Grade, ...] = (
    Grade("g0-nano", 1, 4, 1, 32, (64, 32)),
    Grade("g1-micro", 2, 8, 2, 64, (128, 64)),
    Grade("g2-small", 2, 16, 4, 64, (256, 128)),
    Grade("g3-medium", 4, 32, 4, 128, (512, 256)),
    Grade("g4-large", 6, 64, 8, 256, (1024, 512, 256)),
    Grade("g5-xlarge", 8, 96, 8, 512, (1024, 512, 256)),
    Grade("g6-xxlarge", 12, 128, 8, 1024, (1024, 512, 256)),
)

GRADE_BY_NAME: Dict[str, Grade] = {g.name: g for g in GRADES}
GRADE_BY_NAME.update({g.name.split("-")[0]: g for g in GRADES})


def get_grade(name: str) -> Grade:
    try:
        return GRADE_BY_NAME[name]
    except KeyError:
        raise ValueError(f"grade: unknown grade {name!r}; known: {[g.name for g in GRADES]}") from None


def light_pattern(max_len: int) -> AttentionPattern:
    """LightSUAN's default sparse pattern for a behavior length L (ours, configurable).

    A local window of the most recent min(64, L/4) behaviors, every (L/32)-th earlier behavior
    (about 32 strided keys per row) and 2 global tokens: ~L*100 pairs against L^2/2 dense.
    """
    return AttentionPattern(window=max(4, min(64, max_len // 4)), dilation=max(2, max_len // 32), num_global=2)


def config_for_grade(grade: str | Grade, schema: Optional[Schema] = None, light: bool = False,
                     **overrides) -> ModelConfig:
    g = get_grade(grade) if isinstance(grade, str) else grade
    kw = dict(
        schema=schema or default_schema(),
        embed_dim=g.embed_dim,
        num_layers=g.layers,
        num_heads=g.heads,
        max_len=g.max_len,
        head_hidden=g.head_hidden,
        grade=g.name,
    )
    kw.update(overrides)
    cfg = ModelConfig(**kw)
    if light and not cfg.sparse:
        cfg = cfg.with_pattern(light_pattern(cfg.max_len))
    return cfg
