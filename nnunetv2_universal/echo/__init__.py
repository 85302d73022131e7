"""The view-agnostic echocardiography model's support code: frozen SAM query, ClinicalBERT class embeddings,
the echo collection, prediction from DICOM cines and the paper's evaluation."""
