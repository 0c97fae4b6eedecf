"""mmcvig: ClusterViG as an OpenMMLab (mmdet / mmpretrain) plugin."""
import os.path as osp

from setuptools import find_packages, setup


def read_version():
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'mmcvig', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmcvig',
    version=read_version(),
    description='ClusterViG (dynamic efficient graph convolutions) for mmdet, mmpretrain '
                'and mmseg',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['mmcvig', 'mmcvig.*']),
    python_requires='>=3.9',
    # The compiled members of the stack (torch, mmcv with ops, torch-scatter) are not
    # listed here: they must be built against one torch, which tools/setup_env.sh does.
    install_requires=['mmengine>=0.10.0,<1.0', 'mmdet>=3.3.0,<3.4', 'mmpretrain>=1.2.0,<1.3',
                      'torch-geometric>=2.5'],
    # Semantic segmentation configs (default_scope='mmseg'). Optional: mmcvig imports
    # without it. ftfy and regex are imported by mmseg.models but not declared by it.
    extras_require={'seg': ['mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex']},
    zip_safe=False,
)
