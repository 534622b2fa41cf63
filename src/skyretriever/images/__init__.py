"""The image data type's domain code: reading FFI cubes and TESScut answers, photometry of cutouts."""
