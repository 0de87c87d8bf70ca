"""Data: read a file or hub split -> map columns -> fill the template -> tokenize -> collate into batches."""
