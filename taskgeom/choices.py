"""The vocabularies of the settings: the names a configuration, the command line and a sweep file may
choose, apart from the code that implements them (which needs torch), so that reading settings and
printing ``--help`` do not import it. The implementing modules import their names from here."""

#: imprinted heads (:mod:`taskgeom.imprinting`): eq. 7 of the paper as printed (scale 1), eq. 7 with one
#: temperature fitted by maximum likelihood on the imprinting samples (App. D's likelihood reading), and class
#: means as in the authors' released code
HEADS = ("cosine", "cosine-ml", "euclidean")
#: padding of random crops and the flip schedule (:mod:`taskgeom.data.augment`)
FILLS = ("zeros", "reflect")
FLIPS = ("random", "alternate")
#: convolution initialisations of the fast recipe (:mod:`taskgeom.train.recipe`)
CONV_INITS = ("kaiming", "dirac", "torch", "torch-dirac")
