"""Editable data files of the vocabulary step: synonyms and translations, stop tags, query words."""
