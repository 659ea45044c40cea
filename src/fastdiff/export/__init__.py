"""Export to ONNX, and a static web page that generates in the browser with onnxruntime-web (no server).

`export_onnx(generator, out)` writes the text encoder(s), UNet and VAE decoder at static shapes, each checked
against torch with onnxruntime, and `manifest.json` (schedules, tokenizers, latent scaling). `export_web` adds the
page and onnxruntime-web's files from the npm registry. Needs the `web` extra (`onnx`, `onnxruntime`, `onnxscript`).
"""

from .npm import ORT_WEB_VERSION, RegistryUnreachable
from .onnx import TOLERANCE, Exported, OnnxExport, export_onnx
from .web import WebExport, build_site, check_web, export_web, torch_noise

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
