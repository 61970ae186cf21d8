"""Users' media as phones produce it, turned into what the providers take (audio, images)."""
