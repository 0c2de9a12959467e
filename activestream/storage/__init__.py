"""Storage: local blobs, the model registry and the sample/label store.

Only stdlib, numpy, SQLAlchemy and safetensors are used here; nothing in this
package imports Kafka, faust, prometheus or torch.
"""

from activestream.storage.blobs import BlobStore
from activestream.storage.registry import ModelRegistry, ModelVersion
from activestream.storage.store import Label, Sample, SampleStore

__all__ = ["BlobStore", "Label", "ModelRegistry", "ModelVersion", "Sample", "SampleStore"]
