import taskgeom


def pytest_report_header(config):
    info = taskgeom.build_info()
    return [f"taskgeom from {taskgeom.__file__}", f"taskgeom build: {info}"]
