"""The science of simassets: plain, typed modules with no Dagster imports."""
