from toolkit.model import build_cnn


def test_parameter_count_and_shapes():
    model = build_cnn()
    assert model.count_params() == 3_274_634
    assert tuple(model.inputs[0].shape) == (None, 28, 28, 1)
    assert tuple(model.outputs[0].shape) == (None, 10)
    shapes = {layer.name: tuple(layer.output.shape) for layer in model.layers[1:]}
    assert shapes["conv1"] == (None, 28, 28, 32)
    assert shapes["pool1"] == (None, 14, 14, 32)
    assert shapes["conv2"] == (None, 14, 14, 64)
    assert shapes["pool2"] == (None, 7, 7, 64)
    assert shapes["fc1"] == (None, 1024)
    assert model.layers[-1].get_config()["activation"] == "linear"  # logits
