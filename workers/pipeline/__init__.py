"""Pure Python audio and feature pipeline: no Django imports here (see docs/pipeline-contract.md)."""
