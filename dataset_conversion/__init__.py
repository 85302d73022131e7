"""Dataset converters: one module per public dataset over the shared toolkit (installed as
nnunetv2_universal.dataset_conversion)."""
