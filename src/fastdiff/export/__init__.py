"""Export to ONNX (`export_onnx`), and a static web page that generates in the browser with onnxruntime-web, no
server (`export_web`). Needs the `web` extra (`onnx`, `onnxruntime`, `onnxscript`).
"""

from .onnx import TOLERANCE, Exported, OnnxExport, export_onnx
from .web import ORT_WEB_VERSION, RegistryUnreachable, WebExport, build_site, check_web, export_web, torch_noise

__all__ = [
    "ORT_WEB_VERSION",
    "TOLERANCE",
    "Exported",
    "OnnxExport",
    "RegistryUnreachable",
    "WebExport",
    "build_site",
    "check_web",
    "export_onnx",
    "export_web",
    "torch_noise",
]
