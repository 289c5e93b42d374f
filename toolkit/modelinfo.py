"""What a Keras image classifier takes and gives, read from the model itself: its input shape,
its number of classes, whether its output is logits or probabilities, and whether it rescales
raw pixels itself (a ``Rescaling`` or ``Normalization`` layer at its input).

Any single-input, single-output classifier qualifies: inputs (H, W, C) with C = 1 or 3, (H, W)
(grayscale without a channel axis, as in the TensorFlow beginner quickstart) or flat (H*W*C);
outputs (K,) scores with K >= 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from toolkit.errors import DataError

RAW_INPUT_LAYERS = ("Rescaling", "Normalization")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_name: str
    input_shape: tuple  # per image, without the batch axis; None for a dimension of any size
    classes: int
    output: str  # "logits" or "probabilities"
    output_evidence: str  # why we say so
    rescaling: str | None  # the layer that rescales raw pixels inside the model, if any
    parameters: int
    fixed_at_export: str | None = None  # how a dynamic height and width were fixed (--input-size)
    framework: str = "keras"  # the framework the model comes from (toolkit/references/): keras, onnx, torch
    # "channels_first" when the model takes (N, C, H, W) (PyTorch, most ONNX models): input_shape is still given
    # channels last, (H, W, C), as the toolkit's images are; runners transpose them for such a model
    data_format: str = "channels_last"

    @property
    def layout(self) -> str:
        return {3: "image", 2: "image without channel axis", 1: "flat"}[len(self.input_shape)]

    @property
    def channels(self) -> int | None:
        """1 or 3 when the input shape says so; None for a flat input (the data decides)."""
        if len(self.input_shape) == 3:
            return self.input_shape[2]
        return 1 if len(self.input_shape) == 2 else None

    @property
    def image_size(self) -> tuple | None:
        """(H, W) for image inputs (entries may be None: any size); None for a flat input."""
        return tuple(self.input_shape[:2]) if len(self.input_shape) >= 2 else None

    def to_json(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["layout"] = self.layout
        return d

    @classmethod
    def from_json(cls, d: dict) -> ModelInfo:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}  # older manifests lack the newer fields
        fields["input_shape"] = tuple(fields["input_shape"])
        return cls(**fields)


def for_export(manifest: dict, model_path) -> ModelInfo:
    """The model as the manifest describes it (exports before that was recorded: read the model)."""
    if manifest.get("model"):
        return ModelInfo.from_json(manifest["model"])
    from toolkit.references import load_reference

    return load_reference(model_path).info


def _op(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history else None


def _is_model(layer) -> bool:
    return hasattr(layer, "layers") and hasattr(layer, "inputs")


def _last_layer(model):
    layer = _op(model.outputs[0]) or model.layers[-1]
    while _is_model(layer) and layer.layers:
        layer = _op(layer.outputs[0]) or layer.layers[-1]
    return layer


def _first_layer(model):
    layers = [la for la in model.layers if type(la).__name__ != "InputLayer"]
    if not layers:
        return None
    first = layers[0]
    return _first_layer(first) if _is_model(first) else first


def _activation_name(layer) -> str | None:
    if type(layer).__name__ == "Softmax":
        return "softmax"
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", None) if act is not None else None


def inspect_model(model, path=None) -> ModelInfo:
    where = path or getattr(model, "name", "model")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise DataError(f"{where} has {len(model.inputs)} input(s) and {len(model.outputs)} output(s); "
                        "the toolkit checks image classifiers with one input and one output")
    in_shape = tuple(model.inputs[0].shape)[1:]
    out_shape = tuple(model.outputs[0].shape)[1:]
    if len(in_shape) not in (1, 2, 3):
        raise DataError(f"{where} takes inputs of shape {in_shape}; expected an image (H, W, C), (H, W) or a "
                        "flat vector")
    if len(in_shape) == 3 and in_shape[2] not in (1, 3):
        raise DataError(f"{where} takes images with {in_shape[2]} channels; the toolkit feeds grayscale (1) or "
                        "RGB (3) images")
    if len(in_shape) == 1 and in_shape[0] is None:
        raise DataError(f"{where} takes flat vectors of unknown length; give the Input a size")
    if len(out_shape) != 1 or not out_shape[0] or out_shape[0] < 2:
        raise DataError(f"{where} outputs shape {out_shape}; expected one score per class, (K,) with K >= 2 "
                        "(a single sigmoid unit is not a K-class classifier)")
    last = _last_layer(model)
    act = _activation_name(last)
    if act == "softmax":
        output, evidence = "probabilities", f"its last layer '{last.name}' applies softmax"
    else:
        output, evidence = "logits", f"its last layer '{last.name}' has {'activation ' + act if act else 'no activation'}"
    first = _first_layer(model)
    rescaling = None
    if first is not None and type(first).__name__ in RAW_INPUT_LAYERS:
        rescaling = f"{type(first).__name__} layer '{first.name}'"
    return ModelInfo(
        name=getattr(model, "name", "model"),
        input_name=model.inputs[0].name,
        input_shape=tuple(None if d is None else int(d) for d in in_shape),
        classes=int(out_shape[0]),
        output=output,
        output_evidence=evidence,
        rescaling=rescaling,
        parameters=int(model.count_params()),
    )


def confirm_output(info: ModelInfo, outputs: np.ndarray) -> ModelInfo:
    """A model whose outputs are non-negative and sum to 1 on real images gives probabilities,
    whatever its last layer looks like (a custom activation, say)."""
    if info.output == "probabilities" or not len(outputs):
        return info
    if (outputs >= 0).all() and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        from dataclasses import replace

        return replace(info, output="probabilities",
                       output_evidence=f"its outputs are non-negative and sum to 1 on {len(outputs)} images")
    return info
