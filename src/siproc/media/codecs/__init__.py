"""media/codecs"""
