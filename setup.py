from setuptools import find_packages, setup

setup(
    name="tfclip-plugin",
    version="0.1.0",
    description="TF-CLIP (AAAI 2024) text-free CLIP video person re-identification as a torchreid plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["tfclip_plugin", "tfclip_plugin.*"]),
    package_data={"tfclip_plugin.configs": ["*.yaml"]},
    install_requires=[
        "torch>=2.2",
        # torchreid 0.2.5 imports these at import time but does not declare them
        "torchvision>=0.16",
        "tensorboard>=2.10",
        "opencv-python-headless>=4.5",
        "scipy>=1.8",
        "six",
        "torchreid>=0.2.5",
        "open_clip_torch>=3.3,<4",  # uses its private _build_vision_tower / CLIPVisionCfg,
        "numpy>=1.23",
        "Pillow>=9.0",
        "gdown>=4.7",
        "h5py>=3.0",
        "yacs>=0.1.8",
        "tqdm>=4.60",
        # `tfclip-reid report`: CMC, feature-map and training-curve figures
        "matplotlib>=3.6",
        # `tfclip-reid report`: t-SNE map of the test features (sklearn.manifold.TSNE)
        "scikit-learn>=1.2",
        # the t-SNE runs on one OpenMP thread (scikit-learn's pool stalls on loaded, shared CPUs)
        "threadpoolctl>=3.1",
    ],
    extras_require={
        # onnx/onnxruntime/onnxscript: the ONNX export tests (torch.onnx.export's dynamo exporter needs onnxscript)
        "test": ["pytest>=7", "onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.5"],
    },
    entry_points={"console_scripts": ["tfclip-reid=tfclip_plugin.cli:main"]},
)
