"""Folder for nnUNet_extTrainer (re-export modules only)."""
