"""InstructBLIP (instruction-aware Q-Former) on mixkit's BLIP-2 parts."""
