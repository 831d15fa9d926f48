"""Calibration data, int8 QDQ quantization and the per-task accuracy gate."""
