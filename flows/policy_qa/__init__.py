"""Policy Q&A: answer veterans' policy questions from a YAML knowledge base, or say "not in the KB".

``kb`` loads and validates the knowledge base, synonyms and user dictionary; ``engine`` matches a
question (normalisation, segmentation, synonyms, BM25 on words and pinyin, fuzzy matching and a
small local sentence encoder, fused into one calibrated confidence); ``evaluate`` measures it on a
labelled case file; ``overlay`` lays the staff console's edits (stored in the database) over the YAML
seed. The chat flow and the gaps report live elsewhere and use :class:`QAEngine`.
"""
