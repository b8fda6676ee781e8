"""Chat has no Celery tasks of its own: its emails are engagement campaigns (``chat/emails.py``),
delivered, retried and swept by ``engagement.tasks``."""
