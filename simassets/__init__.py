"""simassets: does a benchmark get easier for a language model when its data is more like the
model's pretraining data?  Similarity, accuracy and attribution as Dagster assets over DuckDB."""

__version__ = "0.1.0"
