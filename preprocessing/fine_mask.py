"""Fine foreground mask of the main character, per frame, inside its track box.

Backends:
- ``isnet``: the ISNet ONNX segmenter on a crop around the box (enlarged by ``crop_margin``),
  resized to a square ``mask.size`` input, so small people get the model's full resolution. The
  graph is rewritten once at load time where needed (``isnet_graph``): fp32 on CPU, and resizing by
  scale for any input size but the native 1024. ``mask.engine`` picks what runs it: on CPU the
  quantized release runs in torch with int8 matrix products (``int8_graph``), which gives
  onnxruntime's masks faster; elsewhere onnxruntime.

  ``mask.fit_crop`` (opt-in) sizes the input to the crop instead: its long side rounded up to a
  multiple of 128, at most ``mask.size`` (``isnet_input_size``); the time falls with the input's
  area. It is off by default because upsampling a small crop is not wasted on ISNet: the model
  (trained at 1024) is far less sure of a person in a small input, and its masks change a lot with
  the input size. In ``benchmarks/preprocess.py`` (short side 512, ``mask.size`` 512) sports2d's
  small walker got crop-sized masks with a mean IoU of 0.33 to the fixed-size ones (some frames 0)
  and some clip statuses changed; pose2sim's crops keep the full size there (IoU 1). At short side
  320, pose2sim's 384-pixel inputs gave 0.40-0.86 per frame.
- ``ultralytics``: a YOLO-seg model (the instance with the best IoU to the box) or a SAM-family
  model prompted with the box.

Both return the mask intersected with the box plus the raw foreground outside it (for the
mask-inside-box consistency filter).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from anycharv.boxes import boxes_to_masks
from anycharv.devices import pick_device
from anycharv.preprocessing.config import MaskConfig, resolve_weights
from anycharv.preprocessing.isnet_graph import ISNET_NATIVE, load_isnet_graph

ISNET_STEP = 128  # input sides the rewritten graph takes exactly


def isnet_input_size(crop_height: int, crop_width: int, cap: int) -> int:
    """Side of the square ISNet input for a crop: its long side rounded up to a multiple of
    ``ISNET_STEP`` (never below one step), at most ``cap`` (``mask.size``)."""
    long_side = max(int(crop_height), int(crop_width), 1)
    return min(int(cap), -(-long_side // ISNET_STEP) * ISNET_STEP)


@dataclass
class MaskResult:
    masks: np.ndarray  # (T, H, W) bool, inside the box
    coverage: np.ndarray  # (T,) mask share of the box area (NaN without a box)
    outside: np.ndarray  # (T,) share of the raw foreground (within the crop) outside the box (NaN without a box)


def onnx_providers(device) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_session(model, device):
    """An onnxruntime session on ``device``; its thread pool follows OMP_NUM_THREADS when set (the
    runner pins threads per worker; onnxruntime would otherwise take every core in every actor)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=onnx_providers(device))


def crop_box(box: np.ndarray, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer crop (x1, y1, x2, y2) around ``box`` enlarged by ``margin`` per side, inside the frame."""
    x1, y1, x2, y2 = [float(v) for v in box]
    mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
    cx1, cy1 = max(0, int(np.floor(x1 - mw))), max(0, int(np.floor(y1 - mh)))
    cx2, cy2 = min(width, int(np.ceil(x2 + mw))), min(height, int(np.ceil(y2 + mh)))
    return cx1, cy1, max(cx2, cx1 + 1), max(cy2, cy1 + 1)


def box_mask(box: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean (H,W) mask of the pixels one xyxy box touches (edges round outwards)."""
    return boxes_to_masks(np.asarray(box, np.float64)[None, :4], height, width)[0] > 0


def _stats(raw: np.ndarray, box: np.ndarray, crop) -> tuple[np.ndarray, float, float]:
    """Intersect a full-frame raw mask with the box; coverage of the box and raw share outside it."""
    h, w = raw.shape
    inside = box_mask(box, h, w)
    mask = raw & inside
    area = inside.sum()
    cx1, cy1, cx2, cy2 = crop
    raw_total = raw[cy1:cy2, cx1:cx2].sum()
    coverage = float(mask.sum() / area) if area else 0.0
    outside = float(1.0 - mask.sum() / raw_total) if raw_total else 0.0
    return mask, coverage, outside


class _BoxMasker:
    """Per-frame loop shared by the backends: a raw foreground mask around the track box (``_raw``),
    then intersection with the box and the coverage / outside-the-box statistics."""

    cfg: MaskConfig

    def _raw(self, frame_rgb: np.ndarray, box: np.ndarray, crop) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, frames: np.ndarray, boxes: np.ndarray) -> MaskResult:
        t, h, w = frames.shape[:3]
        masks = np.zeros((t, h, w), bool)
        coverage = np.full(t, np.nan, np.float32)
        outside = np.full(t, np.nan, np.float32)
        for i in range(t):
            if np.isnan(boxes[i]).any():
                continue
            crop = crop_box(boxes[i], self.cfg.crop_margin, w, h)
            masks[i], coverage[i], outside[i] = _stats(self._raw(frames[i], boxes[i], crop), boxes[i], crop)
        return MaskResult(masks, coverage, outside)


def isnet_engine(cfg: MaskConfig, device_type: str, quantized: bool) -> str:
    """``mask.engine`` resolved: auto takes torch-int8 for a quantized graph on CPU."""
    if cfg.engine != "auto":
        return cfg.engine
    return "torch-int8" if quantized and device_type == "cpu" else "onnxruntime"


class IsnetMasker(_BoxMasker):
    def __init__(self, cfg: MaskConfig):
        from anycharv.preprocessing.int8_graph import Int8Graph

        self.cfg = cfg
        path = resolve_weights(cfg.weights)
        device = pick_device(cfg.device)
        resizable = cfg.size != ISNET_NATIVE or cfg.fit_crop
        model, rewritten = load_isnet_graph(path, device.type, resizable)
        quantized = any(n.op_type == "ConvInteger" for n in model.graph.node)
        self.engine = isnet_engine(cfg, device.type, quantized)
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name
        if self.engine == "torch-int8":
            if not quantized or device.type != "cpu":
                raise ValueError(f"mask.engine=torch-int8 needs a quantized ISNet graph on CPU; {cfg.weights} on "
                                 f"{device.type} {'is' if quantized else 'is not'} quantized")
            self.int8 = Int8Graph(model, [self.output_name], source=cfg.weights)
            self.session = None
        else:
            self.session = ort_session(model.SerializeToString() if rewritten else path, device)

    def input_size(self, crop_height: int, crop_width: int) -> int:
        """Side of the model input for a crop of this size (see ``isnet_input_size``)."""
        if not self.cfg.fit_crop:
            return self.cfg.size
        return isnet_input_size(crop_height, crop_width, self.cfg.size)

    def probability(self, crop_rgb: np.ndarray) -> np.ndarray:
        """Foreground probability (h, w) float32 of an RGB crop."""
        import cv2

        h, w = crop_rgb.shape[:2]
        s = self.input_size(h, w)
        x = cv2.resize(crop_rgb, (s, s), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0 - 0.5
        x = x.transpose(2, 0, 1)[None]
        # The output is already a sigmoid probability; no per-image min-max stretch (that would turn
        # a crop without any foreground into noise).
        if self.session is None:
            y = self.int8.run(x)[self.output_name][0, 0]
        else:
            y = self.session.run([self.output_name], {self.input_name: x})[0][0, 0].astype(np.float32)
        return cv2.resize(y, (w, h), interpolation=cv2.INTER_LINEAR)

    def _raw(self, frame_rgb: np.ndarray, box: np.ndarray, crop) -> np.ndarray:
        cx1, cy1, cx2, cy2 = crop
        raw = np.zeros(frame_rgb.shape[:2], bool)
        raw[cy1:cy2, cx1:cx2] = self.probability(frame_rgb[cy1:cy2, cx1:cx2]) >= self.cfg.threshold
        return raw


class UltralyticsMasker(_BoxMasker):
    """YOLO-seg (best-IoU person instance) or SAM-family (box prompt) masks."""

    def __init__(self, cfg: MaskConfig):
        from anycharv.preprocessing.detect_track import load_ultralytics

        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.is_sam = "sam" in os.path.basename(cfg.weights).lower()
        self.model = load_ultralytics(cfg.weights, "SAM" if self.is_sam else "YOLO")

    def _raw(self, frame_rgb: np.ndarray, box: np.ndarray, crop=None) -> np.ndarray:
        import cv2

        from anycharv.preprocessing.detect_track import box_iou, ultralytics_predict

        h, w = frame_rgb.shape[:2]
        bgr = np.ascontiguousarray(frame_rgb[..., ::-1])
        if self.is_sam:
            res = ultralytics_predict(self.model, bgr, bboxes=[box.tolist()], device=str(self.device),
                                      verbose=False)[0]
            best = 0
        else:
            res = ultralytics_predict(self.model, bgr, imgsz=self.cfg.imgsz, conf=self.cfg.conf, classes=[0],
                                     device=str(self.device), verbose=False)[0]
            if res.masks is None or res.boxes is None or not len(res.boxes):
                return np.zeros((h, w), bool)
            best = int(np.argmax(box_iou(res.boxes.xyxy.cpu().numpy(), box)[:, 0]))
        if res.masks is None or not len(res.masks):
            return np.zeros((h, w), bool)
        m = res.masks.data[best].float().cpu().numpy()
        if m.shape != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        return m >= self.cfg.threshold



def build_masker(cfg: MaskConfig):
    return IsnetMasker(cfg) if cfg.backend == "isnet" else UltralyticsMasker(cfg)
