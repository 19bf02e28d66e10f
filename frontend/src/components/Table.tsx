// A data table that scrolls sideways on narrow screens, sorts by column, opens rows with
// Enter or a click, and downloads exactly what it shows as CSV.
import type { ComponentChildren, TargetedKeyboardEvent } from 'preact';
import { useMemo, useState } from 'preact/hooks';

import { saveCsv, toCsv } from '../lib/csv';
import { t } from '../lib/i18n';
import { Empty } from './ui';

export interface TableColumn<T> {
  key: string;
  header: string;
  cell: (row: T) => ComponentChildren;
  /** The CSV value; columns without one are left out of the download. */
  csv?: (row: T) => string | number | boolean | null | undefined;
  /** Sort value; columns without one do not sort. */
  sort?: (row: T) => number | string;
  numeric?: boolean;
}

export function DataTable<T>({
  label,
  columns,
  rows,
  rowKey,
  onOpen,
  csvName,
  empty,
  initialSort,
  testId,
  selectedKey,
  pageSize,
}: {
  label: string;
  columns: TableColumn<T>[];
  rows: readonly T[];
  rowKey: (row: T) => string;
  onOpen?: (row: T) => void;
  /** File name for the CSV button; no button without it. */
  csvName?: string;
  empty?: ComponentChildren;
  initialSort?: { key: string; descending: boolean };
  testId?: string;
  selectedKey?: string;
  /** Rows per page; all rows on one page when absent. */
  pageSize?: number;
}) {
  const [sort, setSort] = useState(initialSort ?? null);
  const [page, setPage] = useState(0);
  const sorted = useMemo(() => {
    const column = sort && columns.find((candidate) => candidate.key === sort.key);
    if (!column?.sort) return rows;
    const value = column.sort;
    const direction = sort!.descending ? -1 : 1;
    return [...rows].sort((left, right) => {
      const a = value(left);
      const b = value(right);
      return (a < b ? -1 : a > b ? 1 : 0) * direction;
    });
  }, [rows, sort, columns]);

  const pages = pageSize ? Math.max(1, Math.ceil(sorted.length / pageSize)) : 1;
  const currentPage = Math.min(page, pages - 1);
  const shown = pageSize ? sorted.slice(currentPage * pageSize, (currentPage + 1) * pageSize) : sorted;

  const download = () => {
    const csvColumns = columns
      .filter((column) => column.csv)
      .map((column) => ({ header: column.header, value: column.csv! }));
    saveCsv(toCsv(sorted, csvColumns), csvName!);
  };

  const onRowKey = (event: TargetedKeyboardEvent<HTMLTableRowElement>, row: T) => {
    if (onOpen && (event.key === 'Enter' || event.key === ' ')) {
      event.preventDefault();
      onOpen(row);
    }
  };

  return (
    <div class="table-block">
      {csvName && rows.length > 0 && (
        <div class="table-tools">
          <button type="button" class="button small" onClick={download} data-testid="csv-download">
            {t('common.downloadCsv')}
          </button>
        </div>
      )}
      {rows.length === 0 ? (
        <Empty>{empty}</Empty>
      ) : (
        <div class="table-scroll" tabIndex={0} role="region" aria-label={label}>
          <table class="data-table" data-testid={testId}>
            <thead>
              <tr>
                {columns.map((column) => {
                  const active = sort?.key === column.key;
                  return (
                    <th
                      key={column.key}
                      class={column.numeric ? 'numeric' : ''}
                      scope="col"
                      aria-sort={active ? (sort!.descending ? 'descending' : 'ascending') : undefined}
                    >
                      {column.sort ? (
                        <button
                          type="button"
                          class="sort-button"
                          onClick={() =>
                            setSort({ key: column.key, descending: active ? !sort!.descending : true })
                          }
                        >
                          {column.header}
                          <span aria-hidden="true">{active ? (sort!.descending ? ' ↓' : ' ↑') : ''}</span>
                        </button>
                      ) : (
                        column.header
                      )}
                    </th>
                  );
                })}
              </tr>
            </thead>
            <tbody>
              {shown.map((row) => {
                const key = rowKey(row);
                return (
                  <tr
                    key={key}
                    class={`${onOpen ? 'clickable' : ''} ${selectedKey === key ? 'selected' : ''}`}
                    tabIndex={onOpen ? 0 : undefined}
                    onClick={onOpen ? () => onOpen(row) : undefined}
                    onKeyDown={onOpen ? (event) => onRowKey(event, row) : undefined}
                    data-row-key={key}
                  >
                    {columns.map((column) => (
                      <td key={column.key} class={column.numeric ? 'numeric' : ''} data-label={column.header}>
                        {column.cell(row)}
                      </td>
                    ))}
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {pages > 1 && (
        <nav class="pager" aria-label={t('common.pages')}>
          <button type="button" class="button small" disabled={currentPage === 0} onClick={() => setPage(currentPage - 1)}>
            {t('common.previous')}
          </button>
          <span class="muted">{t('common.pageOf', { page: currentPage + 1, pages })}</span>
          <button type="button" class="button small" disabled={currentPage >= pages - 1} onClick={() => setPage(currentPage + 1)}>
            {t('common.nextPage')}
          </button>
        </nav>
      )}
    </div>
  );
}
