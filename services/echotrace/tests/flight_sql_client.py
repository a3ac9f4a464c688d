"""A third-party Flight SQL client for tests/flight_sql.rs: ADBC's Flight SQL driver through DB-API.

    flight_sql_client.py URI [--token T | --login USER:PASSWORD] [--arrow FILE] [--unprepared] SQL
    flight_sql_client.py URI [--token T] --catalog

With SQL: runs it (cursor.execute, which prepares the statement, then fetch_arrow_table) and prints
the number of rows; --arrow also writes the result as an Arrow IPC file; --unprepared executes it
as a plain statement (ADBC's statement API) instead. With --catalog: prints the server's vendor name, then
catalog.schema.table for every table (GetObjects), then the columns of posts (GetTables with
schemas). Errors go to stderr with exit status 1.
"""

import argparse
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow
import pyarrow.ipc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("uri")
    parser.add_argument("sql", nargs="?")
    parser.add_argument("--token")
    parser.add_argument("--login")
    parser.add_argument("--arrow")
    parser.add_argument("--catalog", action="store_true")
    parser.add_argument("--unprepared", action="store_true")
    args = parser.parse_intermixed_args()

    options = {}
    if args.token:
        options["adbc.flight.sql.authorization_header"] = f"Bearer {args.token}"
    if args.login:
        options["username"], options["password"] = args.login.split(":", 1)
    try:
        # The server is read-only, without transactions: autocommit is all there is.
        with flight_sql.connect(args.uri, db_kwargs=options, autocommit=True) as connection:
            if args.catalog:
                print(connection.adbc_get_info()["vendor_name"])
                objects = connection.adbc_get_objects(depth="tables").read_all().to_pylist()
                for catalog in objects:
                    for schema in catalog["catalog_db_schemas"]:
                        for table in schema["db_schema_tables"]:
                            print(f'{catalog["catalog_name"]}.{schema["db_schema_name"]}.{table["table_name"]}')
                print(",".join(connection.adbc_get_table_schema("posts").names))
                return
            with connection.cursor() as cursor:
                if args.unprepared:
                    cursor.adbc_statement.set_sql_query(args.sql)
                    stream, _ = cursor.adbc_statement.execute_query()
                    table = pyarrow.RecordBatchReader._import_from_c(stream.address).read_all()
                else:
                    cursor.execute(args.sql)
                    table = cursor.fetch_arrow_table()
    except Exception as error:  # the test reads the message
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    if args.arrow:
        with pyarrow.ipc.new_file(args.arrow, table.schema) as writer:
            writer.write_table(table)
    print(table.num_rows)


if __name__ == "__main__":
    main()
