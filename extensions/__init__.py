"""Examples of user code: subclasses of skyretriever's Analysis and Finder."""
