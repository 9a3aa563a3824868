"""File names of the Hugging Face checkpoint layout that every mixkit checkpoint folder uses."""

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # never loaded: a pickle can run code
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
