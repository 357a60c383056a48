"""What people read: the validation's recorder (the report as it grows), the console, report.html, plots,
the format matrix and the catalogue of checks.
"""
