"""The chat bot's understanding of shoppers' messages in English, Turkish and Latvian.

- ``text``: folding (case, accents, Turkish dotless i), clause splitting, hand-off phrases.
- ``classifier``: a character n-gram TF-IDF + logistic regression classifier (scikit-learn)
  trained on the merchant's example phrases; pure Python, no Django.
- ``understanding``: builds the classifier from the database (``BotIntent`` phrases, knowledge
  base articles, intents registered through ``chat.registry``), rebuilds it when they change,
  and decides what a message asks for (intents, hand-off, or nothing certain).
- ``evaluation``: the labelled sets in ``data/`` and the figures ``chat_bot_evaluate`` prints.
"""
