"""The Python pipeline a user would write for the video `cargo xtask bench --video` makes, for its ratios.

OpenCV reads the frames; facenet-pytorch's MTCNN(keep_all=True) finds the faces (its defaults, on a
PIL image, in every frame or one of N, the boxes carried between); each face's box is grown by the
margin, cropped, resized, centre-cropped and normalised with torchvision's transforms; a torchvision
AlexNet (or ResNet-18) encoder with caf-rs's regressor head, random weights, reads the frame's faces
as one batch. Prints one JSON object on stdout. Needs torch, torchvision, facenet-pytorch and
opencv-python-headless; nothing in the tests uses it.
"""

import argparse
import json
import time

import cv2
import torch
import torchvision
from facenet_pytorch import MTCNN
from PIL import Image
from torch import nn
from torchvision import transforms


def model(arch):
    if arch == "alexnet":
        encoder, width = nn.Sequential(torchvision.models.alexnet().features, nn.AdaptiveAvgPool2d(6), nn.Flatten()), 9216
    else:
        encoder = torchvision.models.resnet18()
        encoder.fc = nn.Identity()
        width = 512
    head = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2))
    return nn.Sequential(encoder, head).eval()


def frames(path):
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SystemExit(f"OpenCV cannot open {path}")
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        yield Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()


def predict(path, detector, net, prepare, margin, every):
    boxes = None
    faces = 0
    count = 0
    started = time.perf_counter()
    with torch.inference_mode():
        for index, image in enumerate(frames(path)):
            count += 1
            if boxes is None or index % every == 0:
                found, _ = detector.detect(image)
                boxes = [] if found is None else found.tolist()
            crops = []
            for x1, y1, x2, y2 in boxes:
                grow_x, grow_y = margin * (x2 - x1), margin * (y2 - y1)
                crops.append(prepare(image.crop((x1 - grow_x, y1 - grow_y, x2 + grow_x, y2 + grow_y))))
            if crops:
                net(torch.stack(crops))
                faces += len(crops)
    seconds = time.perf_counter() - started
    return {"detect_every": every, "seconds": seconds, "frames_per_s": count / seconds, "faces": faces, "frames": count}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--arch", default="alexnet")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--detect-every", default="1,5,15")
    # The timing settings every bench script takes; one pass over the video is the measurement.
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--min-seconds", type=float, default=0.0)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device != "cpu":
        raise SystemExit("this script times the CPU pipeline")

    started = time.perf_counter()
    decoded = sum(1 for _ in frames(args.video))
    decode_s = time.perf_counter() - started

    detector = MTCNN(keep_all=True, device=args.device)
    net = model(args.arch)
    prepare = transforms.Compose(
        [
            transforms.Resize(args.resize),
            transforms.CenterCrop(args.size),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    runs = [predict(args.video, detector, net, prepare, args.margin, int(every)) for every in args.detect_every.split(",")]
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "opencv": cv2.__version__,
                "threads": torch.get_num_threads(),
                "decode_frames_per_s": decoded / decode_s,
                "predict": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
