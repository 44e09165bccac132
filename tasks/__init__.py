"""The autoloader's steps: pure DICOM functions and the thin Prefect tasks around them."""
