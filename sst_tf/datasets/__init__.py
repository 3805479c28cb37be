"""Benchmark data-set readers: official layouts, TFDS builders and user folders.

Each reader returns an `sst_tf.data.Dataset` of two path splits with the
zero-shot split of METHOD.md 1 (`cub`, `cars196`, `sop`) or the user's own
split (`folder`), after checking the official counts and dropping (or, with
`strict_images`, refusing) images that cannot be decoded. They are registered
in `sst_tf.data.DATASETS`.
"""
