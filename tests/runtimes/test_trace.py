"""Reading a runtime's intermediate tensors back (the first-divergence stage's target side), on files built here."""

import numpy as np
import onnx
from onnx import TensorProto, helper

from modelgate.runtimes import onnxruntime


def _qdq_file(path) -> str:
    """x -> Relu -> QuantizeLinear -> DequantizeLinear -> Add(1) -> y, as a QDQ int8 file holds a quantized tensor."""
    nodes = [
        helper.make_node("Relu", ["x"], ["relu:0"], name="relu"),
        helper.make_node("QuantizeLinear", ["relu:0", "scale", "zero"], ["relu_q"], name="relu_quantize"),
        helper.make_node("DequantizeLinear", ["relu_q", "scale", "zero"], ["relu_dq"], name="relu_dequantize"),
        helper.make_node("Add", ["relu_dq", "one"], ["y"], name="add"),
    ]
    initializers = [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.5]),
                    helper.make_tensor("zero", TensorProto.INT8, [], [0]),
                    helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_onnx_runtime_reads_every_node_output_and_a_quantized_tensor_as_int8_holds_it(tmp_path):
    x = np.array([[0.2, -1.0, 1.3]], np.float32)
    trace = onnxruntime.trace(_qdq_file(tmp_path / "qdq.onnx"), {"x": x}, max_bytes=1 << 20)
    assert [(t.name, t.op_type, t.node) for t in trace.tensors] == [("relu:0", "Relu", "relu"), ("y", "Add", "add")]
    assert trace.tensors[1].inputs == ("relu:0", "one")  # the dequantized copy read as the tensor it copies
    np.testing.assert_array_equal(trace.values["relu:0"], [[0.0, 0.0, 1.5]])  # rounded to the int8 step of 0.5
    np.testing.assert_array_equal(trace.values["y"], [[1.0, 1.0, 2.5]])
    assert trace.left_out == []
    assert onnxruntime.trace(str(tmp_path / "qdq.onnx"), {"x": x}, max_bytes=12).left_out == ["y"]


def test_litert_and_openvino_read_every_op_s_output_with_its_names(tmp_path):
    """A small SavedModel converted as the litert and openvino targets convert it: LiteRT fuses it into one op
    whose output it names after the function call, and the signature's key names it too."""
    from modelgate.execution.quiet import import_tensorflow
    from modelgate.numerics.divergence import normalised
    from modelgate.runtimes import litert, openvino

    tf = import_tensorflow()

    class Dense(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.nn.relu(tf.matmul(x, self.w, name="project") + 0.5, name="activate")}

    saved = tmp_path / "dense"
    module = Dense()
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.__call__})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
    (tmp_path / "model.tflite").write_bytes(converter.convert())
    ov = openvino.import_openvino()
    ov.save_model(ov.convert_model(str(saved)), str(tmp_path / "model.xml"), compress_to_fp16=False)
    x = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 2.0]], np.float32)
    expected = np.maximum(x @ module.w.numpy() + 0.5, 0)

    lite = litert.trace(str(tmp_path / "model.tflite"), {"x": x}, max_bytes=1 << 20)
    last = lite.tensors[-1]
    assert last.op_type == "FULLY_CONNECTED" and "y" in last.candidates, last
    np.testing.assert_allclose(lite.values[last.name], expected, rtol=1e-6)

    vino = openvino.trace(str(tmp_path / "model.xml"), {"x": x}, max_bytes=1 << 20)
    assert vino.tensors and all(t.op_type not in ("Constant", "Parameter", "Result") for t in vino.tensors)
    named = {normalised(c) for t in vino.tensors for c in t.candidates}
    assert {"y", "activate"} & named, vino.tensors
    np.testing.assert_allclose(vino.values[vino.tensors[-1].name], expected, rtol=1e-6)
