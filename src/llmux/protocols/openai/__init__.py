"""OpenAI API (and DeepSeek's variant): wire models, conversion, rendering."""
