"""The int8 ladder's training steps: what changes a float model's weights so that the exporters' ordinary
int8 files behave like it (DESIGN.md, "quantize/"). A step takes the user's float Keras model and images
and returns a Keras model of the same architecture with other weights; the exporters build tflite-int8,
tflite-micro and onnx-int8 from it as from any model, and parity judges them against the user's model.

- finetune.py: quantization-aware fine-tuning toward the float model (distillation), Keras 3.
"""
