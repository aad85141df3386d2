"""SUAN and LightSUAN CTR models on the unified attention kernels."""
from .batch import Batch, TokenLayout, collate, random_batch
from .config import GRADES, FieldSpec, Grade, ModelConfig, Schema, config_for_grade, default_schema, get_grade
from .models import SUAN, LightSUAN, count_parameters

__all__ = ["Batch", "TokenLayout", "collate", "random_batch", "GRADES", "FieldSpec", "Grade", "ModelConfig",
           "Schema", "config_for_grade", "default_schema", "get_grade", "SUAN", "LightSUAN", "count_parameters"]
