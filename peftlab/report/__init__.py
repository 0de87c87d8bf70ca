"""Tables, samples and HTML pages from results files; no training code and no torch here."""
