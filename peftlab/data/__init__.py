"""Owns the rows: read a file or hub split -> detect the format -> fill the template -> tokenize with loss masks -> collate.
May import config, errors and models (the cache folder); never methods, train, generation or any recipe."""
