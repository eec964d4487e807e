"""Copies of an mpnn checkpoint with its radial floors fitted on a training file, or removed.

Training only evaluates a model at its training distances, where the floors change
nothing, so a checkpoint trained before floors existed plus floors fitted on its training
file is the model a training with floors gives; and removing them shows what they do
(``README.md`` here, "Radial floors"). ``--zbl`` also adds the ``mlpot learn`` default's
ZBL term (covalent switch 0.5-0.75 of each bond length: zero at training distances).

    python bench/peers/radial_floors.py MODEL.pt --train TRAIN.xyz -o FLOORED.pt [--zbl]
    python bench/peers/radial_floors.py MODEL.pt --none -o FREE.pt [--zbl]
"""

from __future__ import annotations

import argparse

import torch

from mlpot.data.dataset import read_dataset, sample_to_graph
from mlpot.models.checkpoint import atomic_save, load_checkpoint, model_from_payload
from mlpot.models.mpnn import CartesianMPNN
from mlpot.models.registry import build_model
from mlpot.models.sum import SumModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("-o", "--output", required=True)
    floors = parser.add_mutually_exclusive_group(required=True)
    floors.add_argument("--train", help="training file the floors are fitted on")
    floors.add_argument("--none", action="store_true", help="remove the floors")
    parser.add_argument("--zbl", action="store_true", help="add the learn default's ZBL term")
    args = parser.parse_args()
    payload = load_checkpoint(args.model)
    model = model_from_payload(payload, source=args.model)
    graphs = []
    if args.train:
        graphs = [
            sample_to_graph(s, model.cutoff, dtype=torch.float64, elements=model.elements)
            for s in read_dataset(args.train)
        ]
    for mpnn in (m for m in model.modules() if isinstance(m, CartesianMPNN)):
        mpnn.radial_floor.fill_(0.0 if args.none else mpnn.cutoff)
        mpnn.extend_domain(graphs)
        print(f"radial floors (Å, elements {mpnn.elements}):\n{mpnn.radial_floor.numpy()}")
    if args.zbl:
        if not isinstance(model, SumModel):
            raise SystemExit("--zbl needs a sum model (offsets + learned term)")
        spec = {"name": "zbl", "cutoff": 0.75, "onset": 0.5, "covalent": True}
        zbl = build_model({**spec, "elements": model.elements})
        model.terms.append(zbl.to(next(model.parameters()).dtype))
        payload["model"]["terms"].append(zbl.config() | {"name": "zbl"})
    payload["state_dict"] = model.state_dict()
    model_from_payload(payload, source=args.output)  # loads back
    atomic_save(payload, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
